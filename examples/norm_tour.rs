//! A tour of the normalizers: each one, built by name, on the same batch of feature maps.
//!
//! ```sh
//! cargo run --example norm_tour                    # every normalizer
//! cargo run --example norm_tour -- group:4 batch   # the ones you name
//! ```
//!
//! For each it prints the layer (hyper-parameters and parameter count) and the mean and standard
//! deviation of its output, then shows BatchNorm's train/eval difference on a fresh layer.

use burn::tensor::{Device, Distribution, Tensor};
use normzoo::norm::{NormConfig, NormError, StatsMode};

fn main() -> Result<(), NormError> {
    let device = Device::default();
    let names: Vec<String> = std::env::args().skip(1).collect();
    let configs = match names.is_empty() {
        true => NormConfig::NAMES
            .iter()
            .map(|name| match *name {
                "group" => Ok(NormConfig::group(4)),
                name => name.parse(),
            })
            .collect::<Result<Vec<_>, _>>()?,
        false => names
            .iter()
            .map(|name| name.parse())
            .collect::<Result<_, _>>()?,
    };

    // Feature maps with mean 3 and standard deviation 2: [batch 8, channels 16, 8×8].
    let x = Tensor::<4>::random([8, 16, 8, 8], Distribution::Normal(3.0, 2.0), &device);
    println!("input: {}\n", summary(x.clone()));
    for config in configs {
        let norm = config.init(16, &device)?.with_mode(StatsMode::Train);
        // Layer and Rms normalize the last axis: give them channels last.
        let y = match config {
            NormConfig::Layer(_) | NormConfig::Rms(_) => norm
                .try_forward(x.clone().permute([0, 2, 3, 1]))?
                .permute([0, 3, 1, 2]),
            _ => norm.try_forward(x.clone())?,
        };
        println!("{config:<10} {}\n           {norm}", summary(y));
    }

    let bn = "batch".parse::<NormConfig>()?.init(16, &device)?;
    let train = bn.clone().with_mode(StatsMode::Train).forward(x.clone());
    let eval = bn.with_mode(StatsMode::Eval).forward(x);
    println!(
        "\nA fresh BatchNorm in train mode gives {}; in eval mode (running statistics \
         after one step) {}: the \"forgot model.eval()\" mismatch.",
        summary(train),
        summary(eval)
    );
    Ok(())
}

fn summary(t: Tensor<4>) -> String {
    let flat = t.flatten::<1>(0, 3);
    let (var, mean) = flat.var_mean_bias(0);
    let mean: f32 = mean.into_scalar();
    let std = var.sqrt().into_scalar::<f32>();
    format!("mean {mean:+.3}, std {std:.3}")
}
