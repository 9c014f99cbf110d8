//! `crossbeam` on eremite: a small use of it that prints `ok crossbeam`.
#[cfg(target_os = "hermit")]
use eremite as _;
fn main() {
    let (tx, rx) = crossbeam::channel::bounded(4);
    let total = crossbeam::scope(|s| {
        for i in 0..4u64 {
            let tx = tx.clone();
            s.spawn(move |_| tx.send(i).unwrap());
        }
        drop(tx);
        rx.iter().sum::<u64>()
    })
    .unwrap();
    assert_eq!(total, 6);
    println!("ok crossbeam {total}");
}
