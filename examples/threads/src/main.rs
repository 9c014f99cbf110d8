//! Threads and std::sync on eremite, on as many cores as the VM has: the
//! first line is `cpus: N`, then each check prints `ok NAME`; the last line
//! is `threads passed`. `threads deadlock` deadlocks on purpose;
//! `threads spawn-join N` spawns and joins N threads one after another.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Condvar, Mutex, OnceLock, RwLock};
use std::thread;
use std::time::{Duration, Instant};

#[cfg(target_os = "hermit")]
use eremite as _;

fn check(name: &str, f: impl FnOnce()) {
    f();
    println!("ok {name}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("spawn-join") {
        let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
        for i in 0..n {
            assert_eq!(thread::spawn(move || i * 2).join().unwrap(), i * 2);
        }
        println!("spawned and joined {n} threads");
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("deadlock") {
        // Main holds the lock and joins a thread that waits for it.
        let lock = Arc::new(Mutex::new(()));
        let guard = lock.lock().unwrap();
        let l = lock.clone();
        let t = thread::spawn(move || drop(l.lock().unwrap()));
        t.join().unwrap();
        drop(guard);
        unreachable!("the join cannot return");
    }
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    println!("cpus: {cpus}");
    check("spawn and join 1000 threads", || {
        let total: u64 = (0..1000u64)
            .map(|i| thread::spawn(move || i * 2).join().unwrap())
            .sum();
        assert_eq!(total, 999 * 1000);
    });
    check("100 threads alive at once", || {
        let handles: Vec<_> = (0..100u64).map(|i| thread::spawn(move || i)).collect();
        assert_eq!(
            handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>(),
            4950
        );
    });
    check("scoped threads", || {
        let mut data = vec![1u64, 2, 3, 4];
        thread::scope(|s| {
            for x in data.iter_mut() {
                s.spawn(move || *x *= 10);
            }
        });
        assert_eq!(data, [10, 20, 30, 40]);
    });
    check("mutex counter", || {
        let counter = Arc::new(Mutex::new(0u64));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let c = counter.clone();
                thread::spawn(move || {
                    for _ in 0..1000 {
                        *c.lock().unwrap() += 1;
                        thread::yield_now();
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(*counter.lock().unwrap(), 8000);
    });
    check("an atomic counter reaches the exact total", || {
        // Long enough that the threads overlap on different cores.
        let n = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let n = n.clone();
                thread::spawn(move || {
                    for _ in 0..250_000 {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(n.load(Ordering::Relaxed), 1_000_000);
    });
    check("condvar", || {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let p = pair.clone();
        let t = thread::spawn(move || {
            *p.0.lock().unwrap() = true;
            p.1.notify_one();
        });
        let (lock, cvar) = &*pair;
        let guard = cvar
            .wait_while(lock.lock().unwrap(), |ready| !*ready)
            .unwrap();
        assert!(*guard);
        drop(guard);
        t.join().unwrap();
        let (guard, result) = cvar
            .wait_timeout(lock.lock().unwrap(), Duration::from_millis(20))
            .unwrap();
        assert!(result.timed_out());
        drop(guard);
    });
    check("rwlock", || {
        let lock = Arc::new(RwLock::new(5));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let l = lock.clone();
                thread::spawn(move || *l.read().unwrap())
            })
            .collect();
        *lock.write().unwrap() += 1;
        for r in readers {
            let v = r.join().unwrap();
            assert!(v == 5 || v == 6);
        }
        assert_eq!(*lock.read().unwrap(), 6);
    });
    check("barrier", || {
        let barrier = Arc::new(Barrier::new(5));
        let handles: Vec<_> = (0..5)
            .map(|_| {
                let b = barrier.clone();
                thread::spawn(move || b.wait().is_leader())
            })
            .collect();
        let leaders = handles
            .into_iter()
            .filter(|_| true)
            .map(|h| h.join().unwrap());
        assert_eq!(leaders.filter(|l| *l).count(), 1);
    });
    check("once lock", || {
        static CELL: OnceLock<u64> = OnceLock::new();
        let handles: Vec<_> = (0..4u64)
            .map(|i| thread::spawn(move || *CELL.get_or_init(|| i + 100)))
            .collect();
        let values: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(values.iter().all(|v| *v == values[0]));
    });
    check("channels", || {
        let (tx, rx) = mpsc::channel();
        for id in 0..4u64 {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..100 {
                    tx.send(id * 1000 + i).unwrap();
                }
            });
        }
        drop(tx);
        assert_eq!(rx.iter().count(), 400);
        let (tx, rx) = mpsc::sync_channel(0);
        let t = thread::spawn(move || tx.send(42).unwrap());
        assert_eq!(rx.recv().unwrap(), 42);
        t.join().unwrap();
    });
    check("park and unpark", || {
        let main = thread::current();
        let t = thread::spawn(move || main.unpark());
        thread::park();
        t.join().unwrap();
        let start = Instant::now();
        thread::park_timeout(Duration::from_millis(10));
        assert!(start.elapsed() >= Duration::from_millis(1));
    });
    check("thread locals and their destructors", || {
        struct Flag(Arc<AtomicU64>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        thread_local! {
            static VALUE: Cell<u64> = const { Cell::new(0) };
            static FLAG: Cell<Option<Flag>> = const { Cell::new(None) };
        }
        VALUE.with(|v| v.set(7));
        let dropped = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (1..=3u64)
            .map(|i| {
                let d = dropped.clone();
                thread::spawn(move || {
                    assert_eq!(VALUE.with(Cell::get), 0);
                    VALUE.with(|v| v.set(i));
                    FLAG.with(|f| f.set(Some(Flag(d))));
                    thread::yield_now();
                    VALUE.with(Cell::get)
                })
            })
            .collect();
        let got: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(VALUE.with(Cell::get), 7);
        assert_eq!(dropped.load(Ordering::SeqCst), 3);
    });
    check("sleeping threads overlap", || {
        let start = Instant::now();
        let handles: Vec<_> = (0..5)
            .map(|_| thread::spawn(|| thread::sleep(Duration::from_millis(50))))
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(50), "{took:?}");
        assert!(took < Duration::from_millis(200), "{took:?}");
    });
    check("Instant is monotonic across threads and cores", || {
        // Each thread stamps an Instant and hands it to the next, which
        // must not see time go backwards, whichever core each runs on.
        let (tx, rx) = mpsc::channel::<Instant>();
        let relay = thread::spawn(move || {
            let (back_tx, back_rx) = mpsc::channel::<Instant>();
            let echo = thread::spawn(move || {
                for stamp in rx {
                    assert!(Instant::now() >= stamp);
                    back_tx.send(Instant::now()).unwrap();
                }
            });
            (echo, back_rx)
        });
        let (echo, back_rx) = relay.join().unwrap();
        for _ in 0..2000 {
            tx.send(Instant::now()).unwrap();
            let stamp = back_rx.recv().unwrap();
            assert!(Instant::now() >= stamp);
        }
        drop(tx);
        echo.join().unwrap();
    });
    check("threads run on every core at once", || {
        // Each thread waits, spinning without blocking, until all have
        // started: with N cores they meet at once; with fewer, time slices
        // get them there.
        let arrived = Arc::new(AtomicU64::new(0));
        let n = cpus as u64 * 2;
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let arrived = arrived.clone();
                thread::spawn(move || {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    while arrived.load(Ordering::SeqCst) < n {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(arrived.load(Ordering::SeqCst), n);
    });
    check("floating point survives switches", || {
        let handles: Vec<_> = (0..4)
            .map(|k| {
                thread::spawn(move || {
                    let mut x = 1.0f64 + k as f64;
                    for _ in 0..1000 {
                        x = (x * 1.000_001).sqrt() + 0.5;
                        thread::yield_now();
                    }
                    x
                })
            })
            .collect();
        let got: Vec<f64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let expected: Vec<f64> = (0..4)
            .map(|k| {
                let mut x = 1.0f64 + k as f64;
                for _ in 0..1000 {
                    x = (x * 1.000_001).sqrt() + 0.5;
                }
                x
            })
            .collect();
        assert_eq!(got, expected);
    });
    check("a spinning thread does not starve the others", || {
        use std::sync::atomic::AtomicBool;
        let stop = Arc::new(AtomicBool::new(false));
        let spinner = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut spins = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    spins += 1;
                    std::hint::spin_loop();
                }
                spins
            })
        };
        // Without preemption the spinner would keep the only core for ever
        // and this sleep would never end.
        thread::sleep(Duration::from_millis(30));
        stop.store(true, Ordering::Relaxed);
        assert!(spinner.join().unwrap() > 0);
    });
    check("floating point survives preemption", || {
        fn work(seed: f64) -> (f64, f64) {
            let mut x = seed;
            let mut v = [seed; 8];
            for i in 0..3_000_000u64 {
                x = (x * 1.000_000_1 + 0.25).sqrt() + (i as f64) * 1e-9;
                for (k, lane) in v.iter_mut().enumerate() {
                    *lane = *lane * 0.999_999 + x * (k as f64 + 1.0);
                }
            }
            (x, v.iter().sum())
        }
        let expected: Vec<(f64, f64)> = (0..3).map(|k| work(k as f64 + 1.5)).collect();
        let handles: Vec<_> = (0..3)
            .map(|k| thread::spawn(move || work(k as f64 + 1.5)))
            .collect();
        let got: Vec<(f64, f64)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(got, expected);
    });
    // hermit-abi's own calls: not on Linux.
    #[cfg(target_os = "hermit")]
    check("semaphores (sys_sem_*)", semaphores);
    println!("threads passed");
}

/// hermit-abi's semaphore calls, which std does not use: declared here.
#[cfg(target_os = "hermit")]
mod sem {
    unsafe extern "C" {
        pub fn sys_sem_init(sem: *mut usize, pshared: i32, value: u32) -> i32;
        pub fn sys_sem_destroy(sem: *mut usize) -> i32;
        pub fn sys_sem_post(sem: *mut usize) -> i32;
        pub fn sys_sem_trywait(sem: *mut usize) -> i32;
        pub fn sys_sem_timedwait(sem: *mut usize, abs_timeout: *const Timespec) -> i32;
    }

    #[repr(C)]
    pub struct Timespec {
        pub sec: i64,
        pub nsec: i32,
    }
}

#[cfg(target_os = "hermit")]
fn semaphores() {
    use sem::*;
    const EAGAIN: i32 = 11;
    const EINVAL: i32 = 22;
    const ETIMEDOUT: i32 = 110;
    let mut handle = 0usize;
    // SAFETY (all calls below): the kernel checks every pointer and handle.
    unsafe {
        assert_eq!(sys_sem_init(&mut handle, 0, 0), 0);
        assert_eq!(sys_sem_trywait(&mut handle), -EAGAIN);
        let shared = handle;
        let poster = thread::spawn(move || {
            let mut h = shared;
            for _ in 0..3 {
                thread::sleep(Duration::from_millis(5));
                assert_eq!(sys_sem_post(&mut h), 0);
            }
        });
        for _ in 0..3 {
            assert_eq!(sys_sem_timedwait(&mut handle, std::ptr::null()), 0);
        }
        poster.join().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            + Duration::from_millis(30);
        let deadline = Timespec {
            sec: now.as_secs() as i64,
            nsec: now.subsec_nanos() as i32,
        };
        let start = Instant::now();
        assert_eq!(sys_sem_timedwait(&mut handle, &deadline), -ETIMEDOUT);
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!(sys_sem_post(&mut handle), 0);
        assert_eq!(sys_sem_trywait(&mut handle), 0);
        assert_eq!(sys_sem_destroy(&mut handle), 0);
        assert_eq!(sys_sem_post(&mut handle), -EINVAL);
        let mut bogus = 0xdead_beef_usize;
        assert_eq!(sys_sem_post(&mut bogus), -EINVAL);
        assert_eq!(sys_sem_init(std::ptr::null_mut(), 0, 1), -14);
    }
}
