package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// client URL SECRET N h1|h2 DELAY_MS: N requests on one connection, after a pause (so a tracer
// that probes new programs once a second has seen this one); prints the local port and replies.
func main() {
	n, _ := strconv.Atoi(os.Args[3])
	delay, _ := strconv.Atoi(os.Args[5])
	time.Sleep(time.Duration(delay) * time.Millisecond)
	var locals []string
	dialer := &net.Dialer{}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2: os.Args[4] == "h2",
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err == nil {
				locals = append(locals, c.LocalAddr().String())
			}
			return c, err
		},
	}
	if os.Args[4] != "h2" {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	client := &http.Client{Transport: tr}
	var replies []map[string]any
	start := time.Now()
	for i := 0; i < n; i++ {
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s/go/items/%d", os.Args[1], i), nil)
		req.Header.Set("X-Secret", os.Args[2])
		resp, err := client.Do(req)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		replies = append(replies, map[string]any{"status": resp.StatusCode, "proto": resp.Proto, "body": string(body)})
	}
	elapsed := time.Since(start).Nanoseconds()
	out, _ := json.Marshal(map[string]any{"locals": locals, "replies": replies, "elapsed_ns": elapsed})
	fmt.Println(string(out))
}
