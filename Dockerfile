# The node daemon's image: `shark-tui daemon`, what `shark-tui tap` deploys as a DaemonSet.
#
#   docker build -t shark-tui:0.1.0 .      # the name tap uses unless --image says otherwise
#
# README.md, "Kubernetes: tap, clean, manifests", says how to get it onto the nodes. This image
# is not built or tested by the project's checks (they run without a container runtime).
#
# Debian 12 as on the development machines (scripts/setup): Debian's Python, so that Debian's
# BCC (python3-bpfcc; the "bcc" on PyPI is another project) imports from the virtualenv.

FROM debian:12-slim AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      python3 python3-venv python3-dev build-essential libpcap-dev \
      "linux-headers-$(dpkg --print-architecture)" \
 && rm -rf /var/lib/apt/lists/*
# BCC will not compile without a kernel header tree. Debian's headers are for Debian's kernel,
# not the node's (struct layouts come from the node's BTF), but BCC only needs them to compile:
# as scripts/setup does, merge the -common tree and the arch tree into the directory the daemon
# points BCC_KERNEL_SOURCE at (shark_tui/ebpf/loader.py HEADER_TREE). A node's own headers
# (/lib/modules/$(uname -r)/build, which the DaemonSet mounts with /usr/src) are used first.
RUN arch="$(dpkg --print-architecture)" \
 && arch_tree="$(ls -d /usr/src/linux-headers-*-"$arch" | grep -v -e cloud -e rt | sort -V | tail -1)" \
 && common_tree="${arch_tree%-"$arch"}-common" \
 && mkdir -p /usr/local/lib/shark-tui/kernel-headers \
 && cp -a "$common_tree/." /usr/local/lib/shark-tui/kernel-headers/ \
 && cp -a "$arch_tree/." /usr/local/lib/shark-tui/kernel-headers/
COPY pyproject.toml setup.py README.md /src/
COPY shark_tui /src/shark_tui
RUN python3 -m venv /opt/shark-tui \
 && /opt/shark-tui/bin/pip install -q --no-cache-dir /src

FROM debian:12-slim
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      python3 python3-bpfcc bpfcc-tools libpcap0.8 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/shark-tui /opt/shark-tui
COPY --from=build /usr/local/lib/shark-tui/kernel-headers /usr/local/lib/shark-tui/kernel-headers
# Debian's bcc module, importable from the virtualenv (the same link scripts/setup makes)
RUN site="$(/opt/shark-tui/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && ln -s /usr/lib/python3/dist-packages/bcc "$site/bcc" \
 && /opt/shark-tui/bin/python -c 'import bcc, shark_tui.engine.daemon'
ENV PATH=/opt/shark-tui/bin:$PATH
# The DaemonSet gives the command itself (shark-tui daemon ...); this is for `docker run`.
ENTRYPOINT ["shark-tui", "daemon"]
