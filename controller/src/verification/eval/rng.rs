//! A small seeded generator and the distributions the simulation draws from. Written out
//! (xoshiro256++ seeded by SplitMix64, as their authors recommend) so the evaluation is
//! reproducible bit for bit from its seed, on any host and any future `rand` release.

/// SplitMix64: turns any 64-bit seed into well-mixed state, and derives per-trial seeds.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xoshiro256++ (Blackman & Vigna).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
    spare_normal: Option<f64>,
}

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut s = [0; 4];
        for v in &mut s {
            x = splitmix64(x);
            *v = x;
        }
        Rng {
            s,
            spare_normal: None,
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = (s[0].wrapping_add(s[3])).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`, 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1_u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform in `0..n` (`n > 0`), by Lemire's multiply-shift (bias below 2⁻⁶⁴·n).
    pub fn below(&mut self, n: usize) -> usize {
        let wide = u128::from(self.next_u64()) * n as u128;
        // The high 64 bits of a 64×64 product fit in usize on 64-bit hosts and are < n.
        usize::try_from(wide >> 64).unwrap_or(0)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal, by Marsaglia's polar method.
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let f = (-2.0 * s.ln() / s).sqrt();
                self.spare_normal = Some(v * f);
                return u * f;
            }
        }
    }

    /// Exponential with mean 1.
    pub fn exponential(&mut self) -> f64 {
        -(1.0 - self.uniform()).ln()
    }

    /// Gamma with the given shape and mean 1 (Marsaglia & Tsang; shapes below 1 by the
    /// `U^(1/k)` boost).
    pub fn gamma_mean_one(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let boost = self.uniform().powf(1.0 / shape);
            return self.gamma_mean_one(shape + 1.0) * (shape + 1.0) / shape * boost;
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v / shape;
            }
        }
    }

    /// Poisson with mean `lambda`: by multiplication of uniforms below 30, else by the
    /// normal approximation (the simulation's per-interval means are far below 30).
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda >= 30.0 {
            let x = (lambda + lambda.sqrt() * self.normal()).round().max(0.0);
            // x is a non-negative whole number far below 2⁶⁴.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            return x as u64;
        }
        let limit = (-lambda).exp();
        let mut k = 0;
        let mut p = self.uniform();
        while p > limit {
            k += 1;
            p *= self.uniform();
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference output of xoshiro256++ from state {1, 2, 3, 4} (Vigna's test vector).
    #[test]
    fn xoshiro_reference_vector() {
        let mut r = Rng {
            s: [1, 2, 3, 4],
            spare_normal: None,
        };
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(first, [41_943_041, 58_720_359, 3_588_806_011_781_223]);
    }

    /// Sample means and variances of each distribution within 4 standard errors.
    #[test]
    fn distributions_have_their_moments() {
        let mut r = Rng::new(7);
        let n = 200_000;
        let moments = |xs: &[f64]| {
            let m = xs.iter().sum::<f64>() / xs.len() as f64;
            let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64;
            (m, v)
        };
        let check = |name: &str, xs: Vec<f64>, mean: f64, var: f64| {
            let (m, v) = moments(&xs);
            let se = (var / xs.len() as f64).sqrt();
            assert!((m - mean).abs() < 4.0 * se, "{name}: mean {m}, want {mean}");
            assert!(
                (v - var).abs() < 0.05 * var,
                "{name}: variance {v}, want {var}"
            );
        };
        check(
            "uniform",
            (0..n).map(|_| r.uniform()).collect(),
            0.5,
            1.0 / 12.0,
        );
        check("normal", (0..n).map(|_| r.normal()).collect(), 0.0, 1.0);
        check(
            "exponential",
            (0..n).map(|_| r.exponential()).collect(),
            1.0,
            1.0,
        );
        check(
            "gamma(2)",
            (0..n).map(|_| r.gamma_mean_one(2.0)).collect(),
            1.0,
            0.5,
        );
        check(
            "gamma(0.5)",
            (0..n).map(|_| r.gamma_mean_one(0.5)).collect(),
            1.0,
            2.0,
        );
        check(
            "poisson(0.3)",
            (0..n).map(|_| r.poisson(0.3) as f64).collect(),
            0.3,
            0.3,
        );
        check(
            "poisson(12)",
            (0..n).map(|_| r.poisson(12.0) as f64).collect(),
            12.0,
            12.0,
        );
        let below: Vec<f64> = (0..n).map(|_| r.below(10) as f64).collect();
        check("below(10)", below, 4.5, 8.25);
    }
}
