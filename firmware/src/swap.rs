//! The page swap between ACTIVE and DFU, and its inverse, one resumable step at a time.
//!
//! With P pages to move, ACTIVE holding the old image `o` and DFU the new image `n`, the swap
//! walks down from the last page; the revert walks back up. Each step is one page copy
//! (erase the destination, copy, then set the step's marker):
//!
//! ```text
//! swap,   for k = P-1 down to 0:   step 2j   ACTIVE[k]  -> DFU[k+1]   (save o_k)
//!                                  step 2j+1 DFU[k]     -> ACTIVE[k]  (install n_k)
//! revert, for k = 0 up to P-1:     step 2j   ACTIVE[k]  -> DFU[k]     (save n_k)
//!                                  step 2j+1 DFU[k+1]   -> ACTIVE[k]  (restore o_k)
//!
//!            before swap        after swap           after revert
//! ACTIVE     o0 o1 .. oP-1      n0 n1 .. nP-1        o0 o1 .. oP-1
//! DFU        n0 n1 .. nP-1 --   n0 o0 .. oP-2 oP-1   n0 n1 .. nP-1 oP-1
//! ```
//!
//! A step overwrites only a page whose content an earlier, completed step already copied
//! elsewhere (or DFU's scratch page), and never touches its own source. So a step cut by a
//! reset can simply be redone from the start: its source is intact, and its destination is
//! erased again first. The marker is written only after the copy, so a set marker always
//! means a complete copy.

use embedded_storage::nor_flash::NorFlash;

use crate::PAGE_BUF;
use crate::error::Error;
use crate::flash::{self, Region};
use crate::layout::Layout;
use crate::state::{self, Status};

/// One page copy: source partition and page, destination partition and page.
fn copy_page<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    (from, from_page): (Region, u32),
    (to, to_page): (Region, u32),
) -> Result<(), Error> {
    let page = layout.page();
    let src = from_page * page;
    let dst = to_page * page;
    flash::erase(flash, to, dst, page)?;
    let mut buf = [0u8; PAGE_BUF];
    let step = flash::to_u32("page buffer", PAGE_BUF)?;
    let mut at = 0;
    while at < page {
        flash::read(flash, from, src + at, &mut buf)?;
        // Skipping an all-erased chunk keeps it erased and saves a write (and its wear).
        if buf.iter().any(|&b| b != 0xFF) {
            flash::write(flash, to, dst + at, &buf)?;
        }
        at += step;
    }
    Ok(())
}

/// The copy that swap step `s` of `p` pages performs.
fn swap_copy(layout: &Layout, p: u32, s: u32) -> ((Region, u32), (Region, u32)) {
    let k = p - 1 - s / 2;
    if s.is_multiple_of(2) {
        ((layout.active(), k), (layout.dfu(), k + 1))
    } else {
        ((layout.dfu(), k), (layout.active(), k))
    }
}

/// The copy that revert step `s` performs.
fn revert_copy(layout: &Layout, s: u32) -> ((Region, u32), (Region, u32)) {
    let k = s / 2;
    if s.is_multiple_of(2) {
        ((layout.active(), k), (layout.dfu(), k))
    } else {
        ((layout.dfu(), k + 1), (layout.active(), k))
    }
}

/// Runs the remaining swap steps.
pub(crate) fn swap<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    status: &Status,
    mut step: impl FnMut(),
) -> Result<(), Error> {
    let Some((_, rec)) = status.record else {
        return Ok(());
    };
    let n = layout.active_pages();
    for s in status.swap_done..2 * rec.swap_pages {
        let (from, to) = swap_copy(layout, rec.swap_pages, s);
        copy_page(flash, layout, from, to)?;
        state::set(flash, layout, status, state::swap_step(n, s))?;
        step();
    }
    Ok(())
}

/// Runs the remaining revert steps.
pub(crate) fn revert<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    status: &Status,
    mut step: impl FnMut(),
) -> Result<(), Error> {
    let Some((_, rec)) = status.record else {
        return Ok(());
    };
    let n = layout.active_pages();
    for s in status.revert_done..2 * rec.swap_pages {
        let (from, to) = revert_copy(layout, s);
        copy_page(flash, layout, from, to)?;
        state::set(flash, layout, status, state::revert_step(n, s))?;
        step();
    }
    Ok(())
}
