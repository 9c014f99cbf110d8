//! `kvbench`'s parts, with host tests (`./x test` runs them natively): a
//! concurrent B-link tree and YCSB's key choice.

pub mod btree;
pub mod ycsb;

#[cfg(test)]
mod tests {
    use crate::btree::BTree;
    use crate::ycsb::{Rng, Zipf, key};
    use std::sync::Arc;

    #[test]
    fn the_tree_keeps_every_key_under_concurrent_inserts() {
        let tree = Arc::new(BTree::default());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let tree = tree.clone();
                std::thread::spawn(move || {
                    for i in 0..50_000u64 {
                        tree.insert(key(i * 4 + t), i * 4 + t);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for i in 0..200_000u64 {
            assert_eq!(tree.get(key(i)), Some(i), "record {i}");
        }
        assert_eq!(tree.get(key(200_000)), None);
    }

    #[test]
    fn zipf_keys_stay_in_range_and_favour_a_few() {
        let zipf = Zipf::new(1000, 0.99);
        let mut rng = Rng(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.choose(&mut rng) as usize] += 1;
        }
        counts.sort_unstable();
        // The most popular key gets far more than a uniform share (100).
        assert!(counts[999] > 2000, "{}", counts[999]);
    }
}
