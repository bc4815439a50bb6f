//! `cdp lake`: the event lake (`lake/events/`, Parquet by day): compact raw objects into it now, or show how
//! far it has come.

use anyhow::Context as _;
use clap::Subcommand;
use functions::storage::FsStore;

use crate::DataArgs;

#[derive(Debug, Subcommand)]
pub(crate) enum LakeCommand {
    /// Compact every raw object named at least `--settle-seconds` ago into the lake, and print what was done.
    Compact {
        #[command(flatten)]
        data: DataArgs,
        /// How old (by its name) a raw object must be: a collector may still be writing younger ones. Default
        /// 0: with no collector running on the folder, every object is complete.
        #[arg(long, default_value_t = 0)]
        settle_seconds: u32,
    },
    /// The watermark, the parts and the raw objects not compacted yet.
    Status(DataArgs),
}

pub(crate) fn run(command: LakeCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        match command {
            LakeCommand::Compact { data, settle_seconds } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                let (mut objects, mut events, mut held, mut parts) = (0, 0, 0, 0);
                // Bounded: each run takes a bounded batch; a folder needing more than this many runs says so.
                for _ in 0..10_000 {
                    let run = functions::lake::compact(&store, i64::from(settle_seconds) * 1000, crate::now()).await?;
                    (objects, events, held) = (objects + run.objects, events + run.events, held + run.held);
                    parts += run.parts.len();
                    if !run.more {
                        break;
                    }
                }
                println!("{objects} raw objects, {events} events into {parts} parts; {held} held for erasures");
                Ok(())
            }
            LakeCommand::Status(data) => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                let (manifest, _) = functions::lake::manifest(&store).await?;
                let parts = functions::lake::parts(&store).await?;
                let tail = functions::lake::raw_tail(&store, &manifest).await?;
                println!("watermark:   {}", manifest.watermark.as_deref().unwrap_or("(none: nothing compacted)"));
                println!("events:      {} compacted", manifest.events);
                println!("parts:       {}", parts.len());
                println!("not yet:     {} raw objects", tail.len());
                Ok(())
            }
        }
    })
}
