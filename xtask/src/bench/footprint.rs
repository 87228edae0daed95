//! Placeholder until this benchmark is written.
use super::{Ctx, Figure};

pub fn run(_ctx: &Ctx) -> anyhow::Result<Vec<Figure>> {
    anyhow::bail!("not written yet")
}
