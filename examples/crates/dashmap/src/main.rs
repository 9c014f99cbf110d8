//! `dashmap` on eremite: a small use of it that prints `ok dashmap`.
#[cfg(target_os = "hermit")]
use eremite as _;
use std::sync::Arc;
fn main() {
    let map = Arc::new(dashmap::DashMap::new());
    let hs: Vec<_> = (0..4u64)
        .map(|t| {
            let map = map.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    map.insert(t * 1000 + i, i);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(map.len(), 4000);
    println!("ok dashmap {}", map.len());
}
