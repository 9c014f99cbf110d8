//! `parking_lot` on eremite: a small use of it that prints `ok parking_lot`.
#[cfg(target_os = "hermit")]
use eremite as _;
use std::sync::Arc;
fn main() {
    let m = Arc::new(parking_lot::Mutex::new(0u64));
    let cv = Arc::new(parking_lot::Condvar::new());
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let (m, cv) = (m.clone(), cv.clone());
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    *m.lock() += 1;
                }
                cv.notify_all();
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(*m.lock(), 4000);
    let rw = parking_lot::RwLock::new(5);
    assert_eq!(*rw.read(), 5);
    println!("ok parking_lot {}", *m.lock());
}
