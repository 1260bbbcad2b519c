//! Pinned host staging for large copies between host and device.
//!
//! The DMA engines read and write only page-locked host memory; from
//! pageable memory the driver copies through a small buffer of its own,
//! chunk by chunk, at a fraction of the bus's speed, and the call returns
//! only when the last chunk has left. A GPU here keeps two pinned slots
//! instead: an upload copies its bytes into a free slot and queues the DMA
//! from it, so it returns as soon as the bytes are in pinned memory (the
//! device reads them while the host goes on); a download lands chunk by
//! chunk in alternating slots, each copied out while the next is in flight.
//! A slot is reused only after the event marked behind its last copy has
//! passed.
//!
//! A copy larger than a slot is several stream operations, so work queued
//! by other threads may run between its chunks. That is safe because a
//! device value is never written while anyone but its variable holds it
//! (in-place updates need the only holder), and an upload writes a buffer
//! no one else sees yet.
//!
//! The bookkeeping is generic over [`StagingDevice`], so the tests run it
//! against a simulated device whose copies land only when waited for.

use crate::error::Result;

/// Slots in the ring: one filling while the other is in flight.
pub(crate) const SLOTS: usize = 2;

/// What staged copies need of a device.
pub(crate) trait StagingDevice {
    /// The host memory of `slot` (pinned, the slot size [`Staging::new`] was given).
    fn slot(&mut self, slot: usize) -> &mut [u8];
    /// Queue a copy of the first `len` bytes of `slot` to device address
    /// `dst`, and mark `slot`'s event behind it.
    fn queue_upload(&mut self, slot: usize, dst: u64, len: usize) -> Result<()>;
    /// Queue a copy of `len` bytes from device address `src` into `slot`,
    /// and mark `slot`'s event behind it (and behind all work queued before).
    fn queue_download(&mut self, slot: usize, src: u64, len: usize) -> Result<()>;
    /// Wait until `slot`'s last marked event has passed.
    fn wait(&mut self, slot: usize) -> Result<()>;
}

/// Which slots have a copy in flight, and which is next.
#[derive(Debug)]
pub(crate) struct Staging {
    slot_bytes: usize,
    in_flight: [bool; SLOTS],
    next: usize,
}

impl Staging {
    /// Bookkeeping for slots of `slot_bytes` each.
    pub fn new(slot_bytes: usize) -> Staging {
        Staging { slot_bytes: slot_bytes.max(1), in_flight: [false; SLOTS], next: 0 }
    }

    /// Copy `src` to device address `dst`: returns once every byte is in a
    /// slot and its copy is queued (the device may still be reading).
    pub fn upload(&mut self, dev: &mut impl StagingDevice, dst: u64, src: &[u8]) -> Result<()> {
        for (i, chunk) in src.chunks(self.slot_bytes).enumerate() {
            let s = self.take(dev)?;
            dev.slot(s)[..chunk.len()].copy_from_slice(chunk);
            // In flight before queueing: a copy queued ahead of a failed
            // event record is still waited for before the slot is reused.
            self.in_flight[s] = true;
            dev.queue_upload(s, dst + (i * self.slot_bytes) as u64, chunk.len())?;
        }
        Ok(())
    }

    /// Copy `dst.len()` bytes from device address `src` into `dst`, after
    /// all work queued before; returns with every byte in `dst`.
    pub fn download(&mut self, dev: &mut impl StagingDevice, dst: &mut [u8], src: u64) -> Result<()> {
        let mut pending: Option<(usize, usize)> = None;
        for at in (0..dst.len()).step_by(self.slot_bytes) {
            let len = self.slot_bytes.min(dst.len() - at);
            let s = self.take(dev)?;
            self.in_flight[s] = true;
            dev.queue_download(s, src + at as u64, len)?;
            // The previous chunk is copied out while this one is in flight.
            if let Some((ps, pat)) = pending.replace((s, at)) {
                self.drain(dev, ps, &mut dst[pat..pat + self.slot_bytes])?;
            }
        }
        if let Some((ps, pat)) = pending {
            let end = dst.len();
            self.drain(dev, ps, &mut dst[pat..end])?;
        }
        Ok(())
    }

    /// The next slot, once its last copy has passed.
    fn take(&mut self, dev: &mut impl StagingDevice) -> Result<usize> {
        let s = self.next;
        self.next = (s + 1) % SLOTS;
        if self.in_flight[s] {
            dev.wait(s)?;
            self.in_flight[s] = false;
        }
        Ok(s)
    }

    /// Wait for `slot`'s download and copy it into `out`.
    fn drain(&mut self, dev: &mut impl StagingDevice, slot: usize, out: &mut [u8]) -> Result<()> {
        dev.wait(slot)?;
        self.in_flight[slot] = false;
        out.copy_from_slice(&dev.slot(slot)[..out.len()]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device whose queued copies run, in order, only when an event is
    /// waited for; touching a slot with a copy still queued on it fails.
    struct Simulated {
        slots: Vec<Vec<u8>>,
        memory: Vec<u8>,
        /// (slot, upload?, device address, len), in stream order.
        queue: Vec<(usize, bool, u64, usize)>,
        waits: usize,
        /// Uploads fail after queueing their copy (an event record failing).
        fail_after_queueing: bool,
    }

    impl Simulated {
        fn new(slot_bytes: usize, memory: usize) -> Simulated {
            Simulated {
                slots: vec![vec![0; slot_bytes]; SLOTS],
                memory: vec![0; memory],
                queue: Vec::new(),
                waits: 0,
                fail_after_queueing: false,
            }
        }
        /// Run the stream up to and including the last copy on `slot`.
        fn run_through(&mut self, slot: usize) {
            let Some(last) = self.queue.iter().rposition(|q| q.0 == slot) else { return };
            for (s, up, addr, len) in self.queue.drain(..=last) {
                let a = addr as usize;
                if up {
                    self.memory[a..a + len].copy_from_slice(&self.slots[s][..len]);
                } else {
                    self.slots[s][..len].copy_from_slice(&self.memory[a..a + len]);
                }
            }
        }
    }

    impl StagingDevice for Simulated {
        fn slot(&mut self, slot: usize) -> &mut [u8] {
            assert!(!self.queue.iter().any(|q| q.0 == slot), "slot {slot} touched with a copy in flight");
            &mut self.slots[slot]
        }
        fn queue_upload(&mut self, slot: usize, dst: u64, len: usize) -> Result<()> {
            self.queue.push((slot, true, dst, len));
            match self.fail_after_queueing {
                true => Err(crate::error::Error::device("simulated: event record failed")),
                false => Ok(()),
            }
        }
        fn queue_download(&mut self, slot: usize, src: u64, len: usize) -> Result<()> {
            self.queue.push((slot, false, src, len));
            Ok(())
        }
        fn wait(&mut self, slot: usize) -> Result<()> {
            self.waits += 1;
            self.run_through(slot);
            Ok(())
        }
    }

    fn pattern(n: usize, seed: u64) -> Vec<u8> {
        (0..n as u64).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 7) as u8).collect()
    }

    #[test]
    fn staged_copies_arrive_whole_without_overwriting_a_slot_in_flight() {
        let slot = 1000;
        for len in [0, 1, 999, 1000, 1001, 2000, 4567] {
            let mut dev = Simulated::new(slot, 20_000);
            let mut st = Staging::new(slot);
            let data = pattern(len, len as u64);
            st.upload(&mut dev, 123, &data).unwrap();
            // Uploads return with copies still queued (asynchronous)...
            assert_eq!(dev.queue.len(), len.div_ceil(slot).min(SLOTS), "{len} bytes: copies left in flight");
            // ...and a download after them reads what they wrote.
            let mut back = vec![0xAA; len];
            st.download(&mut dev, &mut back, 123).unwrap();
            assert_eq!(back, data, "{len} bytes up and back");
            assert!(dev.queue.is_empty(), "a download returns with its copies done");
            assert_eq!(&dev.memory[123..123 + len], &data[..]);
            assert!(dev.memory[..123].iter().chain(&dev.memory[123 + len..]).all(|&b| b == 0), "nothing else written");
        }
    }

    #[test]
    fn interleaved_uploads_and_downloads_keep_stream_order() {
        let mut dev = Simulated::new(64, 4096);
        let mut st = Staging::new(64);
        let a = pattern(300, 1);
        let b = pattern(130, 2);
        st.upload(&mut dev, 0, &a).unwrap();
        st.upload(&mut dev, 1000, &b).unwrap();
        // Overwrite part of `a` before reading it back: the later copy wins.
        let c = pattern(100, 3);
        st.upload(&mut dev, 50, &c).unwrap();
        let mut got = vec![0; 300];
        st.download(&mut dev, &mut got, 0).unwrap();
        let mut want = a.clone();
        want[50..150].copy_from_slice(&c);
        assert_eq!(got, want);
        let mut got = vec![0; 130];
        st.download(&mut dev, &mut got, 1000).unwrap();
        assert_eq!(got, b);
        assert!(dev.waits > 0);
    }

    #[test]
    fn a_copy_queued_before_an_error_is_still_waited_for() {
        let mut dev = Simulated::new(8, 64);
        let mut st = Staging::new(8);
        dev.fail_after_queueing = true;
        assert!(st.upload(&mut dev, 0, &[1; 8]).is_err());
        assert!(st.upload(&mut dev, 8, &[2; 8]).is_err());
        dev.fail_after_queueing = false;
        // Slot 0 has a copy queued: the next upload waits for it before
        // writing the slot (the simulated slot() fails otherwise).
        st.upload(&mut dev, 16, &[3; 8]).unwrap();
        let mut back = vec![0; 24];
        st.download(&mut dev, &mut back, 0).unwrap();
        assert_eq!(back, [[1u8; 8], [2; 8], [3; 8]].concat());
    }
}
