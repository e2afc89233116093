//! MT19937, the 32-bit Mersenne Twister, seeded the way torch's CPU generator seeds it: only the
//! low 32 bits of the seed are used (torch's `manual_seed(2**40 + 7)` draws what seed 7 draws).

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// Standard MT19937 state; `next_u32` yields the same sequence as C++ `std::mt19937`.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    index: usize,
}

impl Mt19937 {
    /// Seeds from the low 32 bits of `seed` with the standard initialisation recurrence.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        Self { state, index: N }
    }

    /// Regenerates all 624 words of state at once.
    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & UPPER_MASK) | (self.state[(i + 1) % N] & LOWER_MASK);
            let mut next = self.state[(i + M) % N] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= MATRIX_A;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }

    /// The next 32-bit output (torch `CPUGeneratorImpl::random`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// Two draws combined, the first as the high word (torch `CPUGeneratorImpl::random64`).
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32() as u64;
        let lo = self.next_u32() as u64;
        (hi << 32) | lo
    }

    /// A float uniform in [0, 1) from the low 24 bits of one draw (torch's float
    /// `uniform_real_distribution`).
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & ((1 << 24) - 1)) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// A double uniform in [0, 1) from the low 53 bits of `next_u64` (torch's double
    /// `uniform_real_distribution`).
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousandth_output_for_default_seed() {
        // C++11 [rand.predef]: the 10000th consecutive output of a default-constructed
        // std::mt19937 (seed 5489) is 4123659995.
        let mut mt = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = mt.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn first_outputs_for_default_seed() {
        // First outputs of std::mt19937 with the default seed 5489 (widely published).
        let mut mt = Mt19937::new(5489);
        assert_eq!(mt.next_u32(), 3_499_211_612);
        assert_eq!(mt.next_u32(), 581_869_302);
        assert_eq!(mt.next_u32(), 3_890_346_734);
    }

    #[test]
    fn seed_uses_low_32_bits() {
        let mut a = Mt19937::new(7);
        let mut b = Mt19937::new((1u64 << 40) + 7);
        for _ in 0..1000 {
            assert_eq!(a.next_u32(), b.next_u32());
        }
    }

    #[test]
    fn u64_takes_first_draw_as_high_word() {
        let mut a = Mt19937::new(1);
        let mut b = Mt19937::new(1);
        let (hi, lo) = (a.next_u32(), a.next_u32());
        assert_eq!(b.next_u64(), ((hi as u64) << 32) | lo as u64);
    }
}
