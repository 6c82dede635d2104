//! Multipart part sizing: pure arithmetic, kept apart so it can be proven.
//!
//! S3 allows at most 10,000 parts of 5 MiB .. 5 GiB each (the last may be
//! smaller), and we do not know a stream's length in advance. Parts start at
//! 8 MiB, so small and medium streams (the common case) use little memory, and
//! double every 1,000 parts: 10 doublings reach 4 GiB parts and the 10,000 parts
//! together hold about 7.8 TiB, more than S3's 5 TiB object limit.

/// Size of the first part; also the threshold below which an upload is a single
/// PutObject.
pub const FIRST_PART_SIZE: u64 = 8 << 20;
/// Parts per size step; the size doubles after each step.
pub const PARTS_PER_STEP: u32 = 1000;
/// S3's part count limit.
pub const MAX_PARTS: u32 = 10_000;
/// S3's part size limit.
pub const MAX_PART_SIZE: u64 = 5 << 30;

/// The size of part `n` (1-based, as S3 numbers them).
pub fn size_for_part(n: u32) -> u64 {
    let step = n.saturating_sub(1) / PARTS_PER_STEP;
    (FIRST_PART_SIZE << step.min(9)).min(MAX_PART_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_parts_hold_five_tib_and_no_part_is_too_big() {
        let total: u64 = (1..=MAX_PARTS).map(size_for_part).sum();
        assert!(total >= 5 << 40, "10,000 parts hold only {total} bytes");
        for n in 1..=MAX_PARTS {
            let s = size_for_part(n);
            assert!(s <= MAX_PART_SIZE, "part {n} is {s} bytes");
            assert!(s >= 5 << 20, "part {n} below S3's 5 MiB minimum");
            if n > 1 {
                assert!(s >= size_for_part(n - 1), "sizes never shrink");
            }
        }
        assert_eq!(size_for_part(1), FIRST_PART_SIZE);
    }

    #[test]
    fn a_4_gib_stream_stays_at_the_first_part_size() {
        // The memory bound in the benchmark target (< 200 MB RSS for a 4 GiB
        // stream) relies on parts staying small for such streams.
        let parts = (4u64 << 30).div_ceil(FIRST_PART_SIZE) as u32;
        assert!(parts <= PARTS_PER_STEP);
        assert_eq!(size_for_part(parts), FIRST_PART_SIZE);
    }
}
