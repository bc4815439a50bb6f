//! `cdp themes`: one-click theme dashboards — what each theme would hold given the data dictionary, what it
//! leaves out and why; `--save` assembles one into the saved insights and dashboards (`GET`/`POST /v1/themes`).

use anyhow::Context as _;
use functions::analysis::themes::{Assembled, THEMES, Theme, assemble_stored, audited, save};
use functions::storage::FsStore;

use crate::DataArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct ThemesArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Only this theme: acquisition, ecommerce, retention, value or audiences.
    theme: Option<String>,
    /// Save the theme's insights and dashboard (`theme-<theme>`), replacing those of an earlier save.
    #[arg(long, requires = "theme")]
    save: bool,
    /// The themes as JSON (as `GET /v1/themes` answers).
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: ThemesArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = FsStore::open(&args.data.data).context("opening the data folder")?;
    let themes = match &args.theme {
        Some(id) => vec![Theme::parse(id)?],
        None => THEMES.to_vec(),
    };
    let assembled = runtime.block_on(assemble_stored(&store, &themes, crate::now()))?;
    if args.save {
        let key = runtime.block_on(functions::suppression::hash_key(&store))?;
        for theme in &assembled {
            let replaced = runtime.block_on(save(&store, theme))?;
            let change = audited(theme, &replaced, &key);
            let target = format!("theme:{}", theme.theme.id());
            runtime.block_on(functions::audit::record(
                &store,
                crate::access::operator(),
                "theme.assemble",
                &target,
                change,
            ))?;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"themes": assembled}))?);
    } else {
        print!("{}", render(&assembled, args.save));
    }
    Ok(())
}

/// Each theme: its dashboard's insights, then what was left out and why.
fn render(themes: &[Assembled], saved: bool) -> String {
    let mut out = String::new();
    for theme in themes {
        match &theme.dashboard {
            Some(board) => out.push_str(&format!(
                "{} — dashboard {}{} (last {} days)\n",
                theme.theme.id(),
                board.id,
                if saved { " saved" } else { "" },
                board.last_days.unwrap_or(0)
            )),
            None => out.push_str(&format!("{} — nothing the data supports\n", theme.theme.id())),
        }
        for insight in &theme.insights {
            out.push_str(&format!("  + {:<40} {}\n", insight.id, insight.name));
        }
        for left in &theme.left_out {
            out.push_str(&format!("  - {:<40} {}: {}\n", left.insight, left.name, left.reason));
        }
    }
    out
}
