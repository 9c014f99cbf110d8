//! YCSB's ingredients (Cooper et al., "Benchmarking cloud serving systems
//! with YCSB", SoCC 2010): a seeded generator, its scrambled Zipfian
//! key choice, and its hashed keys.

/// SplitMix64: small, fast and good enough to pick keys.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// YCSB's Zipfian generator (Gray et al., "Quickly generating
/// billion-record synthetic databases", SIGMOD 1994), its items then
/// scattered over the key space by a hash, as YCSB's
/// ScrambledZipfianGenerator does.
pub struct Zipf {
    items: u64,
    theta: f64,
    alpha: f64,
    zeta: f64,
    eta: f64,
}

impl Zipf {
    pub fn new(items: u64, theta: f64) -> Self {
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zeta_n = zeta(items);
        let zeta_2 = zeta(2.min(items));
        Self {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta: zeta_n,
            eta: (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n),
        }
    }

    pub fn choose(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let uz = u * self.zeta;
        let rank = if uz < 1.0 {
            0
        } else if uz < 1.0 + 0.5f64.powf(self.theta) {
            1
        } else {
            (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64
        };
        // Scatter the popular ranks over the keys.
        fnv(rank.min(self.items - 1)) % self.items
    }
}

/// FNV-1a of a number's bytes.
fn fnv(value: u64) -> u64 {
    value
        .to_le_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
            (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// The key stored for record `i` (spread, as YCSB hashes its keys).
pub fn key(i: u64) -> u64 {
    fnv(i ^ 0x5bd1_e995)
}
