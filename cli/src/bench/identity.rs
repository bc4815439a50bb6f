//! `cdp bench identity`: batch ID resolution on synthetic but realistic links, side by side with DuckDB's
//! iterative SQL stitching of the same links.

use std::io::Write as _;
use std::time::Instant;

use anyhow::bail;
use shared::identity::batch::{NO_USER, resolve};

/// A deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Synthetic people: most have 1–3 identifiers, some many devices, a few devices are shared by many
/// people (adversarial). Each person's identifiers are linked as events would link them (login events tie
/// the user id to each device; repeats happen), up to about `links_per_id` links per identifier. Identifier
/// ids are shuffled so people's ids are not contiguous.
pub(crate) struct Synthetic {
    pub(crate) identifiers: usize,
    pub(crate) links: Vec<(u32, u32)>,
    pub(crate) users: Vec<u32>,
    pub(crate) shared_devices: usize,
}

pub(crate) fn generate(identifiers: usize, links_per_id: f64, seed: u64) -> Synthetic {
    let mut rng = Rng(seed);
    // A random permutation of 0..n as the identifiers' ids.
    let mut ids: Vec<u32> = (0..identifiers as u32).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut users = vec![NO_USER; identifiers];
    let target_links = (identifiers as f64 * links_per_id) as usize;
    let mut links = Vec::with_capacity(target_links + identifiers / 10);
    let mut next = 0usize;
    let mut person = 0u32;
    let mut people_devices: Vec<u32> = Vec::new();
    while next < identifiers {
        let roll = rng.below(1000);
        let count = match roll {
            0..=549 => 1,
            550..=799 => 2,
            800..=939 => 3,
            940..=989 => 4 + rng.below(4) as usize,
            _ => 8 + rng.below(25) as usize,
        }
        .min(identifiers - next);
        let mine = &ids[next..next + count];
        next += count;
        if count >= 2 {
            users[mine[0] as usize] = person; // the first is the person's user id
            for &device in &mine[1..] {
                links.push((mine[0], device));
            }
            people_devices.push(mine[1]);
        }
        person += 1;
    }
    // A few shared devices (a family tablet, a kiosk): one device id linked to several people's user ids.
    let shared_devices = (identifiers / 5000).max(1);
    let mut user_ids: Vec<u32> =
        users.iter().enumerate().filter(|(_, u)| **u != NO_USER).map(|(i, _)| i as u32).collect();
    if !user_ids.is_empty() && !people_devices.is_empty() {
        for _ in 0..shared_devices {
            let device = people_devices[rng.below(people_devices.len() as u64) as usize];
            for _ in 0..2 + rng.below(30) {
                let user = user_ids[rng.below(user_ids.len() as u64) as usize];
                links.push((user, device));
            }
        }
    }
    user_ids.clear();
    // Repeated events re-link what is already linked, up to the target number of links.
    let base = links.len();
    while links.len() < target_links && base > 0 {
        let l = links[rng.below(base as u64) as usize];
        links.push(if rng.below(2) == 0 { l } else { (l.1, l.0) });
    }
    // Events arrive in no particular order.
    for i in (1..links.len()).rev() {
        links.swap(i, rng.below(i as u64 + 1) as usize);
    }
    Synthetic { identifiers, links, users, shared_devices }
}

fn sums(labels: &[u32]) -> (u128, u128) {
    let mut label_sum: u128 = 0;
    let mut mixed: u128 = 0;
    for (id, &label) in labels.iter().enumerate() {
        label_sum += u128::from(label);
        mixed += id as u128 * 31 + u128::from(label);
    }
    (label_sum, mixed)
}

pub(crate) fn run(identifiers: usize, links_per_id: f64, duckdb: bool) -> anyhow::Result<()> {
    if identifiers == 0 || identifiers > u32::MAX as usize / 2 {
        bail!("--identifiers must be between 1 and {}", u32::MAX / 2);
    }
    let start = Instant::now();
    let data = generate(identifiers, links_per_id, 42);
    println!(
        "cdp bench identity: {} identifiers, {} links, {} adversarial shared devices (generated in {:.1} s)",
        data.identifiers,
        data.links.len(),
        data.shared_devices,
        start.elapsed().as_secs_f64()
    );
    let rss_before = super::kit::peak_rss_bytes().unwrap_or(0);

    let start = Instant::now();
    let plain = resolve(data.identifiers, &data.links, None);
    let plain_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let ruled = resolve(data.identifiers, &data.links, Some(&data.users));
    let ruled_secs = start.elapsed().as_secs_f64();
    let rss_after = super::kit::peak_rss_bytes().unwrap_or(0);
    // Working memory of the resolver: parent, size and user per identifier, and the labels it returns; the
    // links are the input.
    let working = 12 * data.identifiers + 4 * data.identifiers;

    println!("| resolver | time (s) | components | refused links | bytes/identifier |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| cdp union-find, no rules | {plain_secs:.3} | {} | 0 | {:.1} (working set) |",
        plain.components,
        working as f64 / data.identifiers as f64
    );
    println!(
        "| cdp union-find, user_id limit 1 | {ruled_secs:.3} | {} | {} | {:.1} (working set) |",
        ruled.components,
        ruled.refused,
        working as f64 / data.identifiers as f64
    );
    println!(
        "process peak RSS grew by {:.1} bytes/identifier while resolving (links held: {:.1} bytes/identifier)",
        rss_after.saturating_sub(rss_before) as f64 / data.identifiers as f64,
        (data.links.len() * 8) as f64 / data.identifiers as f64
    );

    if duckdb {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("links.csv");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for (a, b) in &data.links {
            writeln!(out, "{a},{b}")?;
        }
        out.flush()?;
        drop(out);
        let identifiers = data.identifiers.to_string();
        let peer = super::kit::duckdb_peer("duckdb_stitch.py", &[path.as_os_str(), identifiers.as_ref()])?;
        let seconds = peer["seconds"].as_f64().unwrap_or(f64::NAN);
        println!(
            "| DuckDB {} label propagation, no rules | {seconds:.3} | {} | – | – ({} iterations; CSV load {:.1} s not counted) |",
            peer["duckdb"].as_str().unwrap_or("?"),
            peer["components"],
            peer["iterations"],
            peer["load_seconds"].as_f64().unwrap_or(f64::NAN)
        );
        let (label_sum, mixed) = sums(&plain.labels);
        let same = peer["components"].as_u64() == Some(plain.components as u64)
            && peer["label_sum"].as_str() == Some(label_sum.to_string().as_str())
            && peer["mixed_sum"].as_str() == Some(mixed.to_string().as_str());
        println!(
            "components identical to DuckDB's (count and label checksums): {}; cdp is {:.0}× faster (target ≥ 20×)",
            if same { "yes" } else { "NO" },
            seconds / plain_secs
        );
        if !same {
            bail!("the components differ from DuckDB's");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_data_is_realistic_and_deterministic() {
        let a = generate(10_000, 2.0, 7);
        let b = generate(10_000, 2.0, 7);
        assert_eq!(a.links, b.links);
        assert!((19_000..=21_000).contains(&a.links.len()), "{}", a.links.len());
        let r = resolve(a.identifiers, &a.links, Some(&a.users));
        assert!(r.refused > 0, "the shared devices trip the user_id rule");
        let plain = resolve(a.identifiers, &a.links, None);
        assert!(plain.components < r.components, "without the rule, shared devices merge people");
    }
}
