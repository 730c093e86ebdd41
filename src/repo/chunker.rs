//! Content-defined chunking (FastCDC 2020) with a gear table keyed from the
//! repository's id-key, so chunk sizes do not fingerprint known files.

use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::Read;

/// Chunk size bounds in bytes (recorded in the repository config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min: usize,
    pub avg: usize,
    pub max: usize,
}

impl ChunkerParams {
    /// File data: 256 KiB on average. An in-place page update re-stores one
    /// chunk, so this is a third of what 1 MiB chunks cost after a typical
    /// day of a server (docs/FORMAT.md has the measurements).
    pub const DATA: ChunkerParams = ChunkerParams {
        min: 64 * 1024,
        avg: 256 * 1024,
        max: 1024 * 1024,
    };
    /// Metadata streams (file lists, reference lists): small, so a change in one
    /// directory re-stores little.
    pub const META: ChunkerParams = ChunkerParams {
        min: 16 * 1024,
        avg: 64 * 1024,
        max: 256 * 1024,
    };

    /// Sizes around an average: a quarter of it to four times it.
    pub fn with_avg(avg: usize) -> ChunkerParams {
        ChunkerParams {
            min: avg / 4,
            avg,
            max: avg * 4,
        }
    }

    pub fn validate(&self) -> Result<(), super::Malformed> {
        let ok = self.min >= 64
            && self.min <= self.avg
            && self.avg <= self.max
            && self.max <= 16 * 1024 * 1024
            && self.avg >= 256
            && self.avg <= 4 * 1024 * 1024
            && self.min.is_multiple_of(2)
            && self.avg.is_multiple_of(2)
            && self.max.is_multiple_of(2);
        if ok {
            Ok(())
        } else {
            Err(super::Malformed::ChunkerSizes(*self))
        }
    }
}

/// Finds cut points; cheap to clone and share between threads.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    masks: (u64, u64),
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
}

impl Chunker {
    pub fn new(params: ChunkerParams, seed: u64) -> Chunker {
        let masks = select_masks(params.avg, Normalization::Level1);
        let (gear, gear_ls) = get_gear_with_seed(seed);
        Chunker {
            params,
            masks,
            gear,
            gear_ls,
        }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the next chunk at the start of `data`. Valid only when `data`
    /// holds at least `max` bytes or is the final remainder.
    pub fn cut(&self, data: &[u8]) -> usize {
        if data.len() <= self.params.min {
            return data.len();
        }
        let (ms, ml) = self.masks;
        let (_, n) = cut_gear(
            data,
            self.params.min,
            self.params.avg,
            self.params.max,
            ms,
            ml,
            ms << 1,
            ml << 1,
            &self.gear,
            &self.gear_ls,
        );
        n.clamp(1, data.len())
    }

    /// Splits everything `reader` yields, calling `emit` for each chunk in order.
    pub fn split_reader<R: Read, E: From<std::io::Error>>(
        &self,
        mut reader: R,
        mut emit: impl FnMut(Vec<u8>) -> Result<(), E>,
    ) -> Result<u64, E> {
        let max = self.params.max;
        // Room for one maximal chunk plus a read-ahead; cuts need `max` bytes.
        let cap = max + max / 2;
        let mut buf: Vec<u8> = Vec::with_capacity(cap);
        let mut eof = false;
        let mut total = 0u64;
        loop {
            if !eof && buf.len() < max {
                // read_to_end reads into spare capacity without zeroing it.
                let want = (cap - buf.len()) as u64;
                let n = (&mut reader).take(want).read_to_end(&mut buf)?;
                eof = (n as u64) < want;
            }
            if buf.is_empty() {
                return Ok(total);
            }
            let n = self.cut(&buf);
            total += n as u64;
            let chunk = buf[..n].to_vec();
            buf.drain(..n);
            emit(chunk)?;
        }
    }
}

/// Push-style splitter for streams we produce ourselves (file lists, refs).
pub struct Splitter {
    chunker: Chunker,
    buf: Vec<u8>,
}

impl Splitter {
    pub fn new(chunker: Chunker) -> Splitter {
        Splitter {
            chunker,
            buf: Vec::new(),
        }
    }

    /// Appends bytes; returns the chunks that are now final.
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let max = self.chunker.params.max;
        let mut start = 0;
        while self.buf.len() - start >= max {
            let n = self.chunker.cut(&self.buf[start..]);
            out.push(self.buf[start..start + n].to_vec());
            start += n;
        }
        self.buf.drain(..start);
        out
    }

    /// Ends the stream; returns the remaining chunks.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < self.buf.len() {
            let n = self.chunker.cut(&self.buf[start..]);
            out.push(self.buf[start..start + n].to_vec());
            start += n;
        }
        self.buf.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn reader_and_splitter_agree_and_cover_everything() {
        let data = pseudo_random(9 * 1024 * 1024 + 17, 7);
        let c = Chunker::new(ChunkerParams::DATA, 42);
        let mut a = Vec::new();
        c.split_reader::<_, std::io::Error>(&data[..], |ch| {
            a.push(ch);
            Ok(())
        })
        .unwrap();
        let mut s = Splitter::new(c.clone());
        let mut b = Vec::new();
        for piece in data.chunks(100_003) {
            b.extend(s.push(piece));
        }
        b.extend(s.finish());
        assert_eq!(a, b);
        assert_eq!(a.concat(), data);
        assert!(a.len() > 3, "expected several chunks, got {}", a.len());
        for ch in &a[..a.len() - 1] {
            assert!(ch.len() >= ChunkerParams::DATA.min && ch.len() <= ChunkerParams::DATA.max);
        }
    }

    #[test]
    fn an_insertion_moves_only_nearby_boundaries() {
        let data = pseudo_random(16 * 1024 * 1024, 3);
        let mut changed = data.clone();
        changed.splice(
            8 * 1024 * 1024..8 * 1024 * 1024,
            b"inserted!".iter().copied(),
        );
        let c = Chunker::new(ChunkerParams::DATA, 9);
        let split = |d: &[u8]| {
            let mut v = Vec::new();
            c.split_reader::<_, std::io::Error>(d, |ch| {
                v.push(blake3::hash(&ch));
                Ok(())
            })
            .unwrap();
            v
        };
        let (a, b) = (split(&data), split(&changed));
        let new = b.iter().filter(|h| !a.contains(h)).count();
        assert!(new <= 2, "{new} new chunks after a 9-byte insertion");
    }

    #[test]
    fn the_seed_changes_boundaries() {
        let data = pseudo_random(8 * 1024 * 1024, 5);
        let lens = |seed| {
            let c = Chunker::new(ChunkerParams::DATA, seed);
            let mut v = Vec::new();
            c.split_reader::<_, std::io::Error>(&data[..], |ch| {
                v.push(ch.len());
                Ok(())
            })
            .unwrap();
            v
        };
        assert_ne!(lens(1), lens(2));
    }
}
