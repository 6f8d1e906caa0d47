//! The decision guide: which normalizer for which task, batch size and architecture, and why,
//! each row citing the numbers the other experiments measured (read from their
//! `findings.json` in the results directory), the images they trained on (`data.txt`), and
//! linking to their sections.

use std::collections::HashMap;
use std::fs;

use super::{DATA_FILE, Experiment, FINDINGS_FILE, Finding, Output, lookup};
use crate::error::read_error;
use crate::{Lab, LabError};

/// The findings of every experiment that has run into the results directory, and the images
/// each image experiment trained on.
struct Evidence {
    findings: HashMap<Experiment, Vec<Finding>>,
    data: HashMap<Experiment, String>,
}

/// The text of `path`, or `None` when there is no such file.
fn read_if_there(path: &std::path::Path) -> Result<Option<String>, LabError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(read_error(path)(err)),
    }
}

impl Evidence {
    fn load(lab: &Lab) -> Result<Self, LabError> {
        let mut evidence = Self {
            findings: HashMap::new(),
            data: HashMap::new(),
        };
        for experiment in Experiment::ALL {
            let dir = lab.out.join(experiment.name());
            let path = dir.join(FINDINGS_FILE);
            let Some(text) = read_if_there(&path)? else {
                continue;
            };
            let findings = serde_json::from_str(&text).map_err(|err| {
                LabError::Read(path.clone(), format!("not a list of findings: {err}"))
            })?;
            evidence.findings.insert(experiment, findings);
            if let Some(data) = read_if_there(&dir.join(DATA_FILE))? {
                evidence.data.insert(experiment, data.trim().to_string());
            }
        }
        Ok(evidence)
    }

    /// The value `name` that `experiment` measured, if it has run.
    fn get(&self, experiment: Experiment, name: &str) -> Option<f64> {
        lookup(self.findings.get(&experiment)?, name)
    }
}

/// One row of the guide.
struct Advice {
    situation: &'static str,
    choice: &'static str,
    why: &'static str,
    /// The experiment that measures it, if the lab has one.
    source: Option<Experiment>,
    /// What it measured, in words, when it has run.
    measured: Option<String>,
}

/// What `measure` reads from the evidence (`None` as soon as one number is missing): the
/// sentence, and whether this run bears the advice out. When it does not, the sentence says so:
/// the guide rests on more than the lab's small runs, and must not hide what they showed.
fn cite(measure: impl FnOnce() -> Option<(String, bool)>) -> Option<String> {
    let (sentence, borne_out) = measure()?;
    Some(if borne_out {
        sentence
    } else {
        format!("{sentence}; *this run does not bear the advice out*")
    })
}

/// A percentage for the guide's sentences.
fn pct(value: f64) -> String {
    format!("{value:.1}%")
}

fn guide(evidence: &Evidence) -> Vec<Advice> {
    use Experiment::*;
    let get = |experiment, name: &str| evidence.get(experiment, name);
    vec![
        Advice {
            situation: "CNN for classification, batches of 16 or more per device",
            choice: "BatchNorm",
            why: "batch statistics are good estimates at this size, the running averages make \
                  inference a fixed affine map, and the normalization lets high learning rates \
                  train",
            source: Some(Convergence),
            measured: cite(|| {
                let batch = get(Convergence, "final accuracy, batchnorm, lr 0.05")?;
                let none = get(Convergence, "final accuracy, none, lr 0.05")?;
                let batch_high = get(Convergence, "final accuracy, batchnorm, lr 0.5")?;
                let none_high = if get(Convergence, "diverged, none, lr 0.5")? == 1.0 {
                    None
                } else {
                    Some(get(Convergence, "final accuracy, none, lr 0.5")?)
                };
                Some((
                    format!(
                        "CNN test accuracy at lr 0.05: BatchNorm {}, none {}; at lr 0.5: \
                         BatchNorm {}, none {}",
                        pct(batch),
                        pct(none),
                        pct(batch_high),
                        none_high.map_or("diverged".into(), pct),
                    ),
                    batch >= none && none_high.is_none_or(|none| batch_high > none),
                ))
            }),
        },
        Advice {
            situation: "small batches: 1 to 8 per device (detection, segmentation, large \
                        images, video, 3D)",
            choice: "GroupNorm (or LayerNorm over C×H×W, GroupNorm with one group)",
            why: "per-sample statistics do not depend on the batch, so training and evaluation \
                  compute the same thing at any batch size; BatchNorm cannot train on one \
                  sample at all",
            source: Some(BatchSize),
            measured: cite(|| {
                let batch = get(BatchSize, "test accuracy, batchnorm, batch 2")?;
                let group = get(BatchSize, "test accuracy, groupnorm(8), batch 2")?;
                let layer = get(BatchSize, "test accuracy, layernorm, batch 2")?;
                let refused = get(BatchSize, "refused, batchnorm, batch 1")? == 1.0;
                Some((
                    format!(
                        "MLP test accuracy at batch 2: BatchNorm {}, GroupNorm {}, LayerNorm {}; \
                         at batch 1 BatchNorm is {}",
                        pct(batch),
                        pct(group),
                        pct(layer),
                        if refused {
                            "refused (PyTorch's error)"
                        } else {
                            "not refused"
                        }
                    ),
                    group > batch && refused,
                ))
            }),
        },
        Advice {
            situation: "replacing BatchNorm in an existing CNN",
            choice: "GroupNorm, swapped in one word",
            why: "same parameters (a scale and a shift per channel), no running statistics to \
                  manage, and no dependence on the batch size",
            source: Some(Swap),
            measured: cite(|| {
                let batch = get(Swap, "test accuracy, batchnorm, batch 32")?;
                let batch_small = get(Swap, "test accuracy, batchnorm, batch 4")?;
                let group = get(Swap, "test accuracy, groupnorm(4), batch 32")?;
                let group_small = get(Swap, "test accuracy, groupnorm(4), batch 4")?;
                Some((
                    format!(
                        "ResNet18 test accuracy at batch 32 / batch 4: BatchNorm {} / {}, \
                         GroupNorm(4) {} / {}",
                        pct(batch),
                        pct(batch_small),
                        pct(group),
                        pct(group_small),
                    ),
                    group_small >= batch_small,
                ))
            }),
        },
        Advice {
            situation: "Transformer",
            choice: "LayerNorm or RMSNorm, pre-norm",
            why: "tokens are normalized one by one, independent of the batch and of the other \
                  positions (BatchNorm mixes in later tokens during training); pre-norm keeps \
                  an unnormalized residual path, so deep stacks train without warm-up",
            source: Some(Sequences),
            measured: cite(|| {
                let layer = get(Sequences, "accuracy, transformer, layernorm, pre-norm")?;
                let rms = get(Sequences, "accuracy, transformer, rmsnorm, pre-norm")?;
                let batch = get(Sequences, "accuracy, transformer, batchnorm, pre-norm")?;
                let none = get(Sequences, "accuracy, transformer, none, pre-norm")?;
                let layer_post = get(Sequences, "accuracy, transformer, layernorm, post-norm")?;
                Some((
                    format!(
                        "2-block Transformer, answers right, pre-norm: LayerNorm {}, RMSNorm {}, \
                         BatchNorm {}, none {}; post-norm LayerNorm {}",
                        pct(layer),
                        pct(rms),
                        pct(batch),
                        pct(none),
                        pct(layer_post),
                    ),
                    layer.max(rms) >= batch.max(none),
                ))
            }),
        },
        Advice {
            situation: "recurrent networks (LSTM, GRU)",
            choice: "LayerNorm",
            why: "the same statistics at every time step and for any sequence length; \
                  BatchNorm would need statistics per step",
            source: Some(Sequences),
            measured: cite(|| {
                let layer = get(Sequences, "accuracy, lstm, layernorm")?;
                let none = get(Sequences, "accuracy, lstm, none")?;
                let batch = get(Sequences, "accuracy, lstm, batchnorm")?;
                Some((
                    format!(
                        "LSTM answers right: LayerNorm {}, none {}, BatchNorm {}",
                        pct(layer),
                        pct(none),
                        pct(batch),
                    ),
                    layer >= none.max(batch),
                ))
            }),
        },
        Advice {
            situation: "deep plain (non-residual) networks",
            choice: "a normalizer after each layer (and residual connections for real depth)",
            why: "without one, each layer rescales the signal and the gradient and the early \
                  layers barely learn; BatchNorm itself makes gradients grow with depth in a \
                  plain stack",
            source: Some(Gradients),
            measured: cite(|| {
                let none = get(Gradients, "output spread at init, none")?;
                let batch = get(Gradients, "output spread at init, batchnorm")?;
                let layer = get(Gradients, "output spread at init, layernorm")?;
                Some((
                    format!(
                        "spread of per-layer gradient norms at init in a 20-layer MLP: {none:.2e} \
                         without, {batch:.2} with BatchNorm, {layer:.2} with LayerNorm"
                    ),
                    none > batch.max(layer),
                ))
            }),
        },
        Advice {
            situation: "residual networks",
            choice: "start the normalizer that ends each residual branch at γ = 0",
            why: "every block starts as the identity, so the signal does not grow with depth",
            source: Some(Init),
            measured: cite(|| {
                let std_one = get(Init, "stream std at init, γ = 1, β = 0")?;
                let std_zero = get(Init, "stream std at init, γ = 0, β = 0")?;
                let loss_one = get(Init, "final loss, γ = 1, β = 0")?;
                let loss_zero = get(Init, "final loss, γ = 0, β = 0")?;
                let accuracy_one = get(Init, "test accuracy, γ = 1, β = 0")?;
                let accuracy_zero = get(Init, "test accuracy, γ = 0, β = 0")?;
                Some((
                    format!(
                        "residual stream std at init: {std_one:.2} with γ = 1, {std_zero:.2} \
                         with γ = 0; final loss {loss_one:.3} against {loss_zero:.3}; test \
                         accuracy {} against {}",
                        pct(accuracy_one),
                        pct(accuracy_zero),
                    ),
                    loss_zero < loss_one && accuracy_zero >= accuracy_one,
                ))
            }),
        },
        Advice {
            situation: "evaluating or deploying a BatchNorm model",
            choice: "evaluation mode: `model.valid()` in burn, `model.eval()` in PyTorch",
            why: "in training mode every prediction depends on the rest of its batch, and on a \
                  batch of one it is meaningless",
            source: Some(TrainEval),
            measured: cite(|| {
                let eval = get(TrainEval, "final accuracy, evaluation mode")?;
                let single = get(TrainEval, "final accuracy, training mode, one image")?;
                Some((
                    format!(
                        "test accuracy in evaluation mode {}, in training mode one image at a \
                         time {}",
                        pct(eval),
                        pct(single),
                    ),
                    eval > single,
                ))
            }),
        },
        Advice {
            situation: "style transfer and image-to-image generators (CycleGAN, pix2pix)",
            choice: "InstanceNorm",
            why: "each image's per-channel contrast is removed, which is the style the \
                  generator is meant to replace; the batch is usually 1",
            source: None,
            measured: None,
        },
    ]
}

pub(super) fn run(lab: &Lab, out: &mut Output) -> Result<(), LabError> {
    let evidence = Evidence::load(lab)?;
    let rows = guide(&evidence);
    out.text(
        "Which normalizer to use, by situation, with the reason and what this lab measured \
         for it. The numbers are read from the other experiments' results in this directory, \
         each with the images it was measured on; where an experiment has not run, its command \
         is given instead. The advice is the \
         field's (it rests on deep models trained long on real data); the lab's runs are small \
         and short, and where one does not bear a row out, the row says so.",
    );
    let mut table = String::from("| situation | use | why | measured |\n|---|---|---|---|\n");
    let mut cited = 0;
    for advice in &rows {
        let measured = match (advice.source, &advice.measured) {
            (Some(source), Some(measured)) => {
                cited += 1;
                let link = format!("[{}]({})", source.name(), source.anchor());
                match evidence.data.get(&source) {
                    Some(data) => format!("{measured} ({data} images; {link})"),
                    None => format!("{measured} ({link})"),
                }
            }
            (Some(source), None) => format!(
                "not run yet: `cargo run --release --example lab -- {}`",
                source.name()
            ),
            (None, _) => "not measured in the lab".into(),
        };
        table.push_str(&format!(
            "| {} | {} | {} | {measured} |\n",
            advice.situation, advice.choice, advice.why
        ));
    }
    out.finding("rows citing a measurement", cited as f64);
    out.finding(
        "rows this run does not bear out",
        rows.iter()
            .filter_map(|advice| advice.measured.as_ref())
            .filter(|measured| measured.contains("does not bear the advice out"))
            .count() as f64,
    );
    out.finding(
        "rows with an experiment",
        rows.iter().filter(|advice| advice.source.is_some()).count() as f64,
    );
    out.text(table);
    out.text(
        "A normalizer with running statistics (BatchNorm, InstanceNorm with \
         `track_running_stats`) behaves differently in training and in evaluation; the others \
         compute the same thing in both. When unsure: GroupNorm for convolutions, LayerNorm \
         (or RMSNorm) for tokens and recurrences.",
    );
    Ok(())
}
