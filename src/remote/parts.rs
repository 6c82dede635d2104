//! Multipart part sizing: pure arithmetic, kept apart so it can be proven.
//!
//! S3 allows at most 10,000 parts of 5 MiB .. 5 GiB each (the last may be
//! smaller), and we do not know a stream's length in advance. Parts start at
//! 8 MiB, so small and medium streams (the common case) use little memory, and
//! double every 1,000 parts: 10 doublings reach 4 GiB parts and the 10,000 parts
//! together hold about 7.8 TiB, more than S3's 5 TiB object limit.

/// Size of the first part.
pub const FIRST_PART_SIZE: u64 = 8 << 20;
/// Streams up to about this size go up in one PutObject (a remote's
/// `single_put_max` overrides it): 2 requests (PutObject, the HeadObject
/// that reads it back) instead of 3 + one per 8 MiB part. Held in memory
/// before the choice is made, which is why it is not larger.
pub const DEFAULT_SINGLE_PUT_MAX: u64 = 64 << 20;
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

/// How a stream starts: the first `parts` parts, `bytes` long together, are
/// read into one buffer before choosing between one PutObject (the stream
/// ended within them) and a multipart upload (those bytes become parts
/// `1..=parts`, so part sizes stay a function of the part number alone and
/// an interrupted upload resumes the same way whatever the threshold). The
/// most whole parts that fit in `single_put_max`, at least one.
pub fn single_put_head(single_put_max: u64) -> (u32, u64) {
    let mut parts = 1;
    let mut bytes = size_for_part(1);
    while bytes + size_for_part(parts + 1) <= single_put_max {
        parts += 1;
        bytes += size_for_part(parts);
    }
    (parts, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_single_put_head_is_whole_parts_within_the_limit() {
        assert_eq!(single_put_head(DEFAULT_SINGLE_PUT_MAX), (8, 64 << 20));
        assert_eq!(single_put_head(50 << 20), (6, 48 << 20));
        // Never less than one part: small limits keep today's behaviour.
        assert_eq!(single_put_head(1), (1, FIRST_PART_SIZE));
        assert_eq!(single_put_head(FIRST_PART_SIZE), (1, FIRST_PART_SIZE));
    }

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
