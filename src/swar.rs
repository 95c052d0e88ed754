//! Eight bytes at a time: masks that flag the bytes of a class in a `u64`, and the copying of
//! a run of unflagged bytes. The hot loops of the JSON reader and writer and of form decoding
//! use them; on a webhook the runs between special bytes are short, so a word per step beats
//! both a byte per step and a SIMD search's set-up.

const ONES: u64 = u64::MAX / 255;
const HIGH: u64 = ONES << 7;

/// The high bit of each byte of `x` equal to `b`, plus possibly some above the first such
/// byte (a borrow only carries upward from a real one, so the lowest flag is always real).
fn equal(x: u64, b: u8) -> u64 {
    let y = x ^ (ONES * u64::from(b));
    y.wrapping_sub(ONES) & !y & HIGH
}

/// `"`, `\` or below 0x20: the bytes a JSON string literal cannot hold as they are.
pub fn json_special(x: u64) -> u64 {
    let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    control | equal(x, b'"') | equal(x, b'\\')
}

/// `%` or `+`: the bytes form decoding changes.
pub fn percent_or_plus(x: u64) -> u64 {
    equal(x, b'%') | equal(x, b'+')
}

/// Copies `src[*r..]` to `dst[*w..]` eight bytes at a time until a chunk holds a byte that
/// `flags` marks (or fewer than eight remain), then advances both positions past the plain
/// bytes only. Each chunk is stored whole: `dst` needs eight bytes of room past the run.
#[inline(always)]
pub fn copy_run(
    src: &[u8],
    r: &mut usize,
    dst: &mut [u8],
    w: &mut usize,
    flags: impl Fn(u64) -> u64,
) {
    while let Some(chunk) = src.get(*r..*r + 8) {
        dst[*w..*w + 8].copy_from_slice(chunk);
        let flagged = flags(u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])));
        if flagged != 0 {
            let plain = flagged.trailing_zeros() as usize / 8;
            *r += plain;
            *w += plain;
            return;
        }
        *r += 8;
        *w += 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Where the first byte of the class is, as a mask's lowest flag says.
    fn first(mask: u64) -> Option<usize> {
        (mask != 0).then(|| mask.trailing_zeros() as usize / 8)
    }

    proptest! {
        #[test]
        fn masks_find_the_first_byte_of_their_class(bytes in any::<[u8; 8]>(), pick in any::<[bool; 8]>()) {
            // Plant class bytes where `pick` says, so matches are common.
            let mut bytes = bytes;
            for (i, p) in pick.iter().enumerate() {
                if *p { bytes[i] = [b'"', b'\\', 0x1f, b'%', b'+', 0, b' ', 0x20][i]; }
            }
            let x = u64::from_le_bytes(bytes);
            let json = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            let form = bytes.iter().position(|&b| b == b'%' || b == b'+');
            prop_assert_eq!(first(json_special(x)), json);
            prop_assert_eq!(first(percent_or_plus(x)), form);
        }

        #[test]
        fn copy_run_stops_at_the_first_flagged_byte(src in proptest::collection::vec(any::<u8>(), 0..40), start in 0usize..8) {
            let start = start.min(src.len());
            let mut dst = vec![0u8; src.len() + 8];
            let (mut r, mut w) = (start, start);
            copy_run(&src, &mut r, &mut dst, &mut w, percent_or_plus);
            let stop = src[start..].iter().position(|&b| b == b'%' || b == b'+').map(|p| start + p);
            // Whole chunks end here; a flagged byte past it is left to the caller's tail.
            let full_end = start + (src.len() - start) / 8 * 8;
            let expected = match stop {
                Some(s) if s < full_end => s,
                _ => full_end,
            };
            prop_assert_eq!(r, expected);
            prop_assert_eq!(w, r);
            prop_assert_eq!(&dst[start..r], &src[start..r]);
        }
    }
}
