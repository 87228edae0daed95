//! Placeholder until the Criterion benchmarks are written.
use super::{Ctx, Figure};

pub fn hooks(_ctx: &Ctx) -> anyhow::Result<Vec<Figure>> {
    anyhow::bail!("not written yet")
}

pub fn pipeline(_ctx: &Ctx) -> anyhow::Result<Vec<Figure>> {
    anyhow::bail!("not written yet")
}

pub fn leases(_ctx: &Ctx) -> anyhow::Result<Vec<Figure>> {
    anyhow::bail!("not written yet")
}
