// An HTTP echo server, as in HermitCore's Go demo: every request is
// answered with what the server saw of it (method, URL, protocol,
// headers, Host, RemoteAddr, form values). Built with Debian's golang-go
// and default flags, it runs unmodified in eremite. GET /quit stops it.
package main

import (
	"fmt"
	"net/http"
	"os"
	"runtime"
	"sort"
)

func echo(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "%s %s %s\n", r.Method, r.URL, r.Proto)
	names := make([]string, 0, len(r.Header))
	for name := range r.Header {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, value := range r.Header[name] {
			fmt.Fprintf(w, "Header[%q] = %q\n", name, value)
		}
	}
	fmt.Fprintf(w, "Host = %q\n", r.Host)
	fmt.Fprintf(w, "RemoteAddr = %q\n", r.RemoteAddr)
	if err := r.ParseForm(); err != nil {
		fmt.Fprintf(w, "ParseForm: %v\n", err)
	}
	keys := make([]string, 0, len(r.Form))
	for key := range r.Form {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		fmt.Fprintf(w, "Form[%q] = %q\n", key, r.Form[key])
	}
}

func main() {
	address := ":8000"
	if len(os.Args) > 1 {
		address = os.Args[1]
	}
	server := &http.Server{Addr: address}
	http.HandleFunc("/", echo)
	http.HandleFunc("/quit", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "bye")
		go server.Close()
	})
	fmt.Printf("listening on %s, GOMAXPROCS %d\n", address, runtime.GOMAXPROCS(0))
	if err := server.ListenAndServe(); err != http.ErrServerClosed {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("served")
}
