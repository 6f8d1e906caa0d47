//! How LayerNorm's `γ` and `β` start, in the residual branches of a deep residual MLP:
//! `γ = 1` (PyTorch's default), `0.1` and `0` (each block starts as the identity, as
//! torchvision's `zero_init_residual` does for BatchNorm), and `β = 1`.
//!
//! Each block is `x + LayerNorm(W₂·ReLU(W₁·x))`: the normalizer ends the branch, so its `γ` sets
//! how much the branch adds to the residual stream at the start, and its `β` adds a constant.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use normzoo_norm::{Norm, NormConfig};

use super::Output;
use super::training_loop::{Data, ImageModel, Schedule, accuracy, smoothed, tail_mean, train};
use crate::plot::{LineChart, Panel, Series, render};
use crate::{Lab, LabError};

/// The initialisations compared: `(γ, β)`.
const INITS: [(f32, f32); 4] = [(1.0, 0.0), (0.1, 0.0), (0.0, 0.0), (1.0, 1.0)];

/// A deep MLP of residual blocks whose branches end in a LayerNorm.
#[derive(Module, Debug)]
pub(crate) struct ResidualMlp {
    input: Linear,
    blocks: Vec<ResidualBlock>,
    head: Linear,
}

/// `x + norm(W₂·ReLU(W₁·x))`.
#[derive(Module, Debug)]
pub(crate) struct ResidualBlock {
    expand: Linear,
    project: Linear,
    norm: Norm,
}

impl ResidualMlp {
    /// The network with PyTorch's LayerNorm initialisation (`γ = 1`, `β = 0`).
    fn new(width: usize, depth: usize, device: &Device) -> Result<Self, LabError> {
        let blocks = (0..depth)
            .map(|_| {
                Ok(ResidualBlock {
                    expand: LinearConfig::new(width, 2 * width).init(device),
                    project: LinearConfig::new(2 * width, width).init(device),
                    norm: NormConfig::layer().init(width, device)?,
                })
            })
            .collect::<Result<_, LabError>>()?;
        Ok(Self {
            input: LinearConfig::new(32 * 32 * 3, width).init(device),
            blocks,
            head: LinearConfig::new(width, 10).init(device),
        })
    }

    /// The same weights with every branch's LayerNorm started at `γ` and `β`.
    fn with_init(mut self, (gamma, beta): (f32, f32)) -> Self {
        self.blocks = self
            .blocks
            .into_iter()
            .map(|block| ResidualBlock {
                norm: block.norm.with_scale(gamma).with_shift(beta),
                ..block
            })
            .collect();
        self
    }

    /// The logits and the residual stream after the last block.
    fn forward_with_stream(&self, images: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let stream =
            self.blocks
                .iter()
                .fold(self.input.forward(images.flatten(1, 3)), |x, block| {
                    let branch = block.project.forward(relu(block.expand.forward(x.clone())));
                    x + block.norm.forward(branch)
                });
        (self.head.forward(stream.clone()), stream)
    }
}

impl ImageModel for ResidualMlp {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_with_stream(images).0
    }
}

fn label((gamma, beta): (f32, f32)) -> String {
    format!("γ = {gamma}, β = {beta}")
}

pub(super) fn run(lab: &Lab, out: &mut Output) -> Result<(), LabError> {
    let depth = lab.size.pick(8, 16, 32);
    let width = lab.size.pick(32, 64, 128);
    let schedule = Schedule {
        steps: lab.size.pick(10, 300, 2000),
        batch_size: 32,
        lr: 0.02,
    };
    let data = Data::new(lab, lab.size.pick(64, 320, 1000));
    let device = lab.device.clone().autodiff();
    let (images, labels) = data.test_set(&lab.device);
    let bar = lab.progress_bar(INITS.len() * schedule.steps, "init: training");
    // One set of weights for every run: the LayerNorms' initialisation is the only difference.
    device.seed(lab.seed);
    let base = ResidualMlp::new(width, depth, &device)?;

    let mut losses = Vec::new();
    let mut table = String::from(
        "| LayerNorm init | residual stream at the start: std / mean | initial loss | final loss (last 10%) | test accuracy |\n|---|---|---|---|---|\n",
    );
    for init in INITS {
        let model = base.clone().with_init(init);
        let (_, stream) = model.valid().forward_with_stream(images.clone());
        let stream_std = stream.clone().var(1).sqrt().mean().into_scalar::<f32>() as f64;
        let stream_mean = stream.mean().into_scalar::<f32>() as f64;
        let (model, curve) = train(model, schedule, &data, &device, &bar);
        let score = 100.0 * accuracy(&model.valid(), images.clone(), labels.clone());
        let name = label(init);
        let initial = curve.first().copied().unwrap_or(f64::NAN);
        let final_loss = tail_mean(&curve, 0.1);
        out.finding(format!("stream std at init, {name}"), stream_std);
        out.finding(format!("stream mean at init, {name}"), stream_mean);
        out.finding(format!("initial loss, {name}"), initial);
        out.finding(format!("final loss, {name}"), final_loss);
        out.finding(format!("test accuracy, {name}"), score);
        table.push_str(&format!(
            "| {name} | {stream_std:.2} / {stream_mean:.2} | {initial:.3} | {final_loss:.3} | {score:.1}% |\n"
        ));
        losses.push(Series::new(
            name,
            smoothed(&curve, (schedule.steps / 30).max(1)),
        ));
    }
    bar.finish_and_clear();
    out.csv("loss.csv", "step", "training loss", &losses)?;
    let chart = LineChart {
        title: format!("{depth} residual blocks, LayerNorm ending each branch"),
        x_label: "step".into(),
        y_label: "cross-entropy (window mean)".into(),
        log_y: true,
        series: losses,
        ..LineChart::default()
    };
    let figure = render(None, &[Panel::Lines(chart)], 1, (760, 460))?;

    out.text(format!(
        "A residual MLP of {depth} blocks `x + LayerNorm(W₂·ReLU(W₁·x))` (width {width}, \
         branch width {}) on the flattened {images}, trained from the same seed for \
         {} steps of SGD (batch {}, lr {}, momentum 0.9) with each block's LayerNorm started \
         at the `γ` and `β` named (`Norm::with_scale`, `Norm::with_shift`: PyTorch's \
         `nn.init.constant_`). The residual stream's statistics are measured on held-out \
         images before training: its standard deviation across features (averaged over \
         images) and its mean.",
        2 * width,
        schedule.steps,
        schedule.batch_size,
        schedule.lr,
        images = lab.data.images(),
    ));
    out.figure(
        "init.png",
        &figure,
        "Training loss for each initialisation of the branches' LayerNorm",
    )?;
    out.text(table);
    let std_of = |init, out: &Output| out.value(&format!("stream std at init, {}", label(init)));
    let mean_of = |init, out: &Output| out.value(&format!("stream mean at init, {}", label(init)));
    out.text(format!(
        "With `γ = 1` every branch adds a unit-variance vector, so after {depth} blocks the \
         stream's standard deviation is {:.2}; with `γ = 0.1` it is {:.2}, and with `γ = 0` \
         {:.2}: every block starts as the identity and the network as a shallow one, which \
         then grows its branches (`γ` gets a gradient even at 0, the weights inside a branch \
         only once `γ` has moved). `β = 1` shifts the stream by one per block: its mean is \
         {:.2} at the start, against {:.2} with `β = 0`.",
        std_of((1.0, 0.0), out),
        std_of((0.1, 0.0), out),
        std_of((0.0, 0.0), out),
        mean_of((1.0, 1.0), out),
        mean_of((1.0, 0.0), out),
    ));
    let unstable: Vec<String> = INITS
        .iter()
        .filter(|&&init| {
            let name = label(init);
            out.value(&format!("final loss, {name}")) > out.value(&format!("initial loss, {name}"))
        })
        .map(|&init| format!("`{}`", label(init)))
        .collect();
    if !unstable.is_empty() {
        out.text(format!(
            "Training ended with a higher loss than it started with for {}: at this learning \
             rate the large residual stream gives large logits and SGD overshoots; the accuracy \
             column, which only counts the largest logit, shows how much of it still \
             classifies right.",
            unstable.join(", ")
        ));
    }
    Ok(())
}
