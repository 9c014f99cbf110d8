// The Go runtime's own needs, checked: 1000 goroutines passing work over
// channels on every CPU, a mutex and a WaitGroup, timers, a nil pointer
// dereference recovered as a panic (SIGSEGV delivered to the runtime's
// handler), the garbage collector under allocation, and a goroutine that
// spins without calls unable to starve the others on one CPU (the
// runtime's asynchronous preemption, a SIGURG to the spinning thread). Each check prints
// "ok NAME"; a failure prints "FAIL NAME" and exits 1. It passes on
// Linux.
package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
)

func check(ok bool, name string) {
	if !ok {
		fmt.Printf("FAIL %s\n", name)
		os.Exit(1)
	}
	fmt.Printf("ok %s\n", name)
}

type node struct{ next *node }

func nilDereference() (recovered bool) {
	defer func() {
		recovered = recover() != nil
	}()
	var n *node
	_ = n.next.next
	return false
}

func main() {
	fmt.Printf("GOMAXPROCS %d\n", runtime.GOMAXPROCS(0))

	// 1000 goroutines: a pipeline of stages, each adding one.
	first := make(chan int)
	in := first
	for i := 0; i < 1000; i++ {
		out := make(chan int)
		go func(in, out chan int) {
			for v := range in {
				out <- v + 1
			}
			close(out)
		}(in, out)
		in = out
	}
	go func() {
		for i := 0; i < 100; i++ {
			first <- i
		}
		close(first)
	}()
	sum := 0
	for v := range in {
		sum += v
	}
	check(sum == 4950+100*1000, "1000 goroutines pass 100 values down a pipeline")

	var mu sync.Mutex
	var wg sync.WaitGroup
	counter := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 10000; j++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	check(counter == 80000, "a mutex and a WaitGroup across threads")

	start := time.Now()
	<-time.After(20 * time.Millisecond)
	check(time.Since(start) >= 20*time.Millisecond, "a timer fires, not early")

	check(nilDereference(), "a nil dereference is recovered as a panic")

	var keep [][]byte
	for i := 0; i < 2000; i++ {
		keep = append(keep, make([]byte, 64<<10))
		if len(keep) > 100 {
			keep = keep[1:]
		}
	}
	runtime.GC()
	var stats runtime.MemStats
	runtime.ReadMemStats(&stats)
	check(stats.NumGC > 0, "the garbage collector runs")
	// A goroutine that never calls anything, on a single P: only a
	// preemption signal lets the main goroutine run again.
	previous := runtime.GOMAXPROCS(1)
	var spins uint64
	stop := false
	go func() {
		for !stop {
			spins++
		}
	}()
	time.Sleep(50 * time.Millisecond)
	stop = true
	runtime.GOMAXPROCS(previous)
	check(true, "a spinning goroutine does not starve the others")
	fmt.Println("goroutines passed")
}
