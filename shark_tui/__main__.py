from shark_tui.cli import main

raise SystemExit(main())
