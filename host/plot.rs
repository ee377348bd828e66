//! `flashmla-etap plot`: redraws the SVG plot of a saved `bench --json` report without a
//! GPU (the same drawing as `bench --plot`), e.g. for another batch or after the plot of a
//! results run was lost in transfer.

use crate::bench::{svg_plot, write_file, Anchors, Report};
use crate::error::{Error, Result};
use std::path::PathBuf;

/// Options of `flashmla-etap plot`.
#[derive(clap::Args, Debug, Clone)]
pub struct PlotArgs {
    /// The report (`bench --json`).
    #[arg(long, value_name = "PATH")]
    pub json: PathBuf,
    /// Where to write the SVG.
    #[arg(long, value_name = "PATH.svg")]
    pub plot: PathBuf,
    /// The batch the plot shows.
    #[arg(long, value_name = "B", default_value_t = 16)]
    pub plot_batch: usize,
    /// The peers' anchors (JSON) [default: the built-in copy of bench/anchors.json].
    #[arg(long, value_name = "PATH")]
    pub peers: Option<PathBuf>,
}

/// The SVG of `report`, with the peers of the card its anchors came from.
pub fn redraw(report: &Report, anchors: &Anchors, batch: usize) -> Result<String> {
    let card = match &report.anchors_card {
        Some(key) => Some(anchors.cards.get(key).ok_or_else(|| {
            Error::invalid(
                "--peers",
                format!(
                    "the anchors (built in unless --peers names a file) have no card `{key}`, \
                     which the report was compared with"
                ),
            )
        })?),
        None => None,
    };
    if !report.points.iter().any(|r| r.point.b == batch) {
        return Err(Error::invalid(
            "--plot-batch",
            format!("the report has no point at b = {batch}"),
        ));
    }
    Ok(svg_plot(report, card, batch))
}

/// Runs `flashmla-etap plot`.
pub fn main(args: &PlotArgs) -> Result<()> {
    let report = Report::load("--json", &args.json)?;
    let anchors = Anchors::load(args.peers.as_deref())?;
    write_file(&args.plot, &redraw(&report, &anchors, args.plot_batch)?)?;
    eprintln!("wrote {}", args.plot.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The committed H200 Accurate results, `bench --json` and `bench --plot` of one run;
    // embedded, as test binaries also run on GPU machines without the repository.
    const RESULTS_JSON: &str = include_str!("../bench/results/h200_accurate.json");
    const RESULTS_SVG: &str = include_str!("../bench/results/h200_accurate.svg");

    fn results() -> Report {
        serde_json::from_str(RESULTS_JSON).unwrap()
    }

    #[test]
    fn redraws_the_plot_the_bench_drew() {
        let anchors = Anchors::load(None).unwrap();
        let svg = redraw(&results(), &anchors, 16).unwrap();
        assert_eq!(svg, RESULTS_SVG);
    }

    #[test]
    fn a_batch_without_points_is_an_error() {
        let anchors = Anchors::load(None).unwrap();
        assert!(matches!(
            redraw(&results(), &anchors, 7),
            Err(Error::InvalidArgument {
                arg: "--plot-batch",
                ..
            })
        ));
    }

    #[test]
    fn a_card_missing_from_the_anchors_is_an_error() {
        let mut report = results();
        report.anchors_card = Some("B200".into());
        let anchors = Anchors::load(None).unwrap();
        assert!(matches!(
            redraw(&report, &anchors, 16),
            Err(Error::InvalidArgument { arg: "--peers", .. })
        ));
    }
}
