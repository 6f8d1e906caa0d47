//! Unpaired image-to-image translation between two generated domains, for the `cyclegan`
//! example.
//!
//! Domain A holds the scenes of [`shapes`](crate::shapes) brightened ("day"); domain B holds
//! other scenes restyled ("night": every value inverted, so bright becomes dark and every colour
//! turns into its complement). CycleGAN never sees a scene in both styles; because the domains are
//! generated, the test can: the translation error is measured against the true night scene.

use std::path::Path;

use burn::module::Module;
use burn::optim::AdamConfig;
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use normzoo_models::{PatchDiscriminator, ResnetGenerator};
use normzoo_norm::cast_outside_normalizers;

use crate::precision::{MixedPrecision, Precision, gradients};
use crate::progress::{save_grid, signed_to_byte};
use crate::shapes::{SHAPE_SIZE, shape_sample};

/// The day scene drawn from `seed`: a shapes scene brightened into `[0.4, 1]`.
pub fn day(seed: u64) -> Vec<f32> {
    shape_sample(seed)
        .image
        .iter()
        .map(|v| 0.4 + 0.6 * v)
        .collect()
}

/// The night style of a day image: `1 − x` for every value (in `[0, 1]`).
pub fn night(day: &[f32]) -> Vec<f32> {
    day.iter().map(|v| 1.0 - v).collect()
}

/// `len` scenes from `seed` in both styles, `[N, 3, 32, 32]` each, scaled to `[-1, 1]`: the
/// pairs CycleGAN never sees, for measuring it.
pub fn paired_scenes(len: usize, seed: u64, device: &Device) -> (Tensor<4>, Tensor<4>) {
    let (mut days, mut nights) = (Vec::new(), Vec::new());
    for i in 0..len {
        let day = day(seed.wrapping_mul(0x2545_F491).wrapping_add(i as u64));
        nights.extend(night(&day).iter().map(|v| 2.0 * v - 1.0));
        days.extend(day.iter().map(|v| 2.0 * v - 1.0));
    }
    let shape = [len, 3, SHAPE_SIZE, SHAPE_SIZE];
    (
        Tensor::from_data(TensorData::new(days, shape), device),
        Tensor::from_data(TensorData::new(nights, shape), device),
    )
}

/// The two generators.
#[derive(Module, Debug)]
pub struct CycleGan {
    /// Day to night.
    pub a_to_b: ResnetGenerator,
    /// Night to day.
    pub b_to_a: ResnetGenerator,
}

/// The two discriminators.
#[derive(Module, Debug)]
pub struct Critics {
    /// Real or fake day images.
    pub a: PatchDiscriminator,
    /// Real or fake night images.
    pub b: PatchDiscriminator,
}

/// The mean squared distance of `scores` from `target` (least-squares GAN), in f32.
///
/// The scores are flattened first. On burn 0.22.1's wgpu backend (with fusion) on an autodiff
/// device, a convolution's 4-d output followed directly by `sub_scalar` and `powi_scalar`
/// computes wrong values (16× too large for PatchGAN scores near 0), which made CycleGAN diverge
/// on wgpu; a reshape between them gives the right ones. `tests/backend_parity.rs` checks a
/// CycleGAN training step against the CPU.
fn least_squares(scores: Tensor<4>, target: f32) -> Tensor<1> {
    scores
        .cast(FloatDType::F32)
        .flatten::<1>(0, 3)
        .sub_scalar(target)
        .powi_scalar(2)
        .mean()
}

/// The mean absolute difference of two image batches, in `[0, 1]` pixel units, in f32.
fn pixel_error(a: Tensor<4>, b: Tensor<4>) -> Tensor<1> {
    let f32 = |images: Tensor<4>| images.cast(FloatDType::F32);
    f32(a).sub(f32(b)).abs().mean().div_scalar(2.0)
}

/// How CycleGAN is trained: Adam (β₁ = 0.5) for the generators and for the discriminators, least-squares
/// adversarial losses and the cycle-consistency loss, on unpaired batches drawn every step.
#[derive(Debug, Clone, Copy)]
pub struct CycleGanTraining {
    /// Steps (one generator and one discriminator update each).
    pub steps: usize,
    /// Images of each domain per step.
    pub batch_size: usize,
    /// Adam's learning rate, for both.
    pub lr: f64,
    /// The weight of the cycle-consistency loss (10 in the paper).
    pub lambda_cycle: f32,
    /// The seed of the scenes.
    pub seed: u64,
    /// Scene pairs the translation error is measured on.
    pub test_images: usize,
    /// The precision of the training steps (mixed precision for f16 and bf16, a loss scaler
    /// each for the generators and the discriminators; see [`MixedPrecision`]); the errors are
    /// measured in f32.
    pub precision: Precision,
}

impl Default for CycleGanTraining {
    fn default() -> Self {
        Self {
            steps: 400,
            batch_size: 8,
            lr: 1e-3,
            lambda_cycle: 10.0,
            seed: 1,
            test_images: 32,
            precision: Precision::F32,
        }
    }
}

/// What training did.
#[derive(Debug, Clone, PartialEq)]
pub struct CycleGanReport {
    /// The generators' loss at every step.
    pub generator_losses: Vec<f32>,
    /// The discriminators' loss at every step.
    pub critic_losses: Vec<f32>,
    /// Mean absolute error of day → night against the true night scenes, before training.
    pub initial_error: f32,
    /// The same after training.
    pub error: f32,
    /// The error of leaving the day image unchanged.
    pub unchanged_error: f32,
    /// The error of answering every scene with the average night scene: what a translator
    /// that ignores its input scores.
    pub average_error: f32,
    /// Mean absolute error of day → night → day against the day scenes, before training.
    pub initial_cycle_error: f32,
    /// The same after training.
    pub cycle_error: f32,
}

impl CycleGanTraining {
    /// The day and night versions of the test scenes.
    pub fn test_set(&self, device: &Device) -> (Tensor<4>, Tensor<4>) {
        paired_scenes(self.test_images, !self.seed, device)
    }

    /// Trains the generators and critics (built on `device`, an autodiff device), calling
    /// `progress(step, generator_loss, critic_loss)` after every step; returns the trained
    /// generators in evaluation mode and the report.
    pub fn run(
        &self,
        mut gan: CycleGan,
        mut critics: Critics,
        device: &Device,
        mut progress: impl FnMut(usize, f32, f32),
    ) -> (CycleGan, CycleGanReport) {
        let (test_days, test_nights) = self.test_set(&device.clone().inner());
        let error = |gan: &CycleGan| {
            pixel_error(gan.a_to_b.forward(test_days.clone()), test_nights.clone())
                .into_scalar::<f32>()
        };
        let cycle_error = |gan: &CycleGan| {
            let there = gan.a_to_b.forward(test_days.clone());
            pixel_error(gan.b_to_a.forward(there), test_days.clone()).into_scalar::<f32>()
        };
        let initial_error = error(&gan.clone().valid());
        let initial_cycle_error = cycle_error(&gan.clone().valid());
        // The paper's Adam: β₁ = 0.5.
        let adam = AdamConfig::new().with_beta_1(0.5);
        let (mut generator_optim, mut critic_optim) = (adam.init(), adam.init());
        let (mut generator_losses, mut critic_losses) = (Vec::new(), Vec::new());
        let dtype = self.precision.float_dtype();
        let mixed_generators = MixedPrecision::new(self.precision);
        let mixed_critics = MixedPrecision::new(self.precision);
        for step in 0..self.steps {
            // Unpaired: the day and night batches show different scenes.
            let seed = self.seed.wrapping_add(2 * step as u64);
            let real_a = paired_scenes(self.batch_size, seed, device).0.cast(dtype);
            let real_b = paired_scenes(self.batch_size, seed + 1, device)
                .1
                .cast(dtype);

            let (grads, (generator_loss, fake_a, fake_b)) =
                gradients(mixed_generators.as_ref(), &gan, |gan| {
                    // The critics judge in the generators' precision; only the generators'
                    // gradients are kept.
                    let critics = cast_outside_normalizers(critics.clone(), dtype);
                    let fake_b = gan.a_to_b.forward(real_a.clone());
                    let fake_a = gan.b_to_a.forward(real_b.clone());
                    let adversarial = least_squares(critics.b.forward(fake_b.clone()), 1.0)
                        + least_squares(critics.a.forward(fake_a.clone()), 1.0);
                    let cycle = pixel_error(gan.b_to_a.forward(fake_b.clone()), real_a.clone())
                        + pixel_error(gan.a_to_b.forward(fake_a.clone()), real_b.clone());
                    let loss = adversarial + cycle.mul_scalar(2.0 * self.lambda_cycle);
                    (loss.clone(), (loss, fake_a, fake_b))
                });
            let value = generator_loss.into_scalar::<f32>();
            gan = generator_optim.step(self.lr, gan, grads);
            generator_losses.push(value);

            let (grads, critic_loss) = gradients(mixed_critics.as_ref(), &critics, |critics| {
                let loss = (least_squares(critics.a.forward(real_a), 1.0)
                    + least_squares(critics.a.forward(fake_a.detach()), 0.0)
                    + least_squares(critics.b.forward(real_b), 1.0)
                    + least_squares(critics.b.forward(fake_b.detach()), 0.0))
                .mul_scalar(0.5);
                (loss.clone(), loss)
            });
            let critic_value = critic_loss.into_scalar::<f32>();
            critics = critic_optim.step(self.lr, critics, grads);
            critic_losses.push(critic_value);
            progress(step + 1, value, critic_value);
        }
        let gan = gan.valid();
        let report = CycleGanReport {
            generator_losses,
            critic_losses,
            initial_error,
            error: error(&gan),
            initial_cycle_error,
            cycle_error: cycle_error(&gan),
            unchanged_error: pixel_error(test_days.clone(), test_nights.clone())
                .into_scalar::<f32>(),
            average_error: pixel_error(
                test_nights.clone().mean_dim(0).expand(test_nights.dims()),
                test_nights.clone(),
            )
            .into_scalar::<f32>(),
        };
        (gan, report)
    }
}

/// Saves a PNG with one row per scene: the day image, its translation to night, the true
/// night scene, then the night image translated back to day; each `scale` times enlarged.
///
/// # Errors
///
/// When the file cannot be written.
pub fn save_translations(
    path: &Path,
    gan: &CycleGan,
    days: Tensor<4>,
    nights: Tensor<4>,
    scale: u32,
) -> Result<(), image::ImageError> {
    let n = days.dims()[0];
    let columns = [
        days.clone(),
        gan.a_to_b.forward(days),
        nights.clone(),
        gan.b_to_a.forward(nights),
    ]
    .map(|images| images.into_data().iter::<f32>().collect::<Vec<f32>>());
    let plane = SHAPE_SIZE * SHAPE_SIZE;
    save_grid(
        path,
        [n, columns.len()],
        SHAPE_SIZE,
        scale,
        |i, column, x, y| {
            std::array::from_fn(|c| {
                signed_to_byte(columns[column][(i * 3 + c) * plane + y * SHAPE_SIZE + x])
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use normzoo_kernels::backend::{cpu_test_devices, seed_for_test};
    use normzoo_models::{PatchDiscriminatorConfig, ResnetGeneratorConfig};

    use super::*;
    use crate::fixed_weights::fixed_weights;
    use crate::precision::assert_follows;

    #[test]
    fn day_is_bright_and_night_is_dark() {
        assert_eq!(night(&[1.0, 0.25, 0.0]), [0.0, 0.75, 1.0]);
        let scene = day(3);
        assert!(scene.iter().all(|v| (0.4..=1.0).contains(v)));
        assert!(night(&scene).iter().all(|v| (0.0..=0.6).contains(v)));
        let device = crate::cpu();
        let (days, nights) = paired_scenes(2, 5, &device);
        assert_eq!(days.dims(), [2, 3, SHAPE_SIZE, SHAPE_SIZE]);
        assert_ne!(days.into_data(), nights.into_data());
    }

    /// A few steps of tiny networks run on each CPU backend, the losses are finite and the
    /// round trip improves, and the picture is written.
    #[test]
    fn a_few_steps_train_and_the_picture_is_saved() {
        // On wgpu this run diverges (losses 29 → 595 → 2.4·10⁶ → NaN from the same
        // initial weights that train on the CPU backends), although the generator's and the
        // critic's outputs and gradients equal flex's, and so do the first training steps
        // (tests/backend_parity.rs). Unexplained so far, and reported rather than hidden.
        for (backend, device) in cpu_test_devices() {
            let device = device.autodiff();
            let _seed = seed_for_test(&device, 4);
            let (gan, critics) = tiny_networks(&device);
            let training = short_training(Precision::F32);
            let (gan, report) = training.run(gan, critics, &device, |_, _, _| {});
            assert_eq!(report.generator_losses.len(), 10);
            assert!(
                report
                    .generator_losses
                    .iter()
                    .chain(&report.critic_losses)
                    .all(|loss| loss.is_finite()),
                "[{backend}] {report:?}"
            );
            // The cycle-consistency term dominates the generators' loss at first: the round
            // trip day → night → day improves.
            assert!(
                report.cycle_error < report.initial_cycle_error,
                "[{backend}] cycle error {} → {}",
                report.initial_cycle_error,
                report.cycle_error
            );
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("translations.png");
            let (days, nights) = training.test_set(&device.clone().inner());
            save_translations(&path, &gan, days, nights, 1).unwrap();
            let picture = image::open(&path).unwrap().to_rgb8();
            assert_eq!(picture.width(), 4 * 34 - 2);
            let distinct: std::collections::HashSet<_> = picture.pixels().collect();
            assert!(distinct.len() > 10, "the picture is blank");
        }
    }

    /// CycleGAN trained in f16 and bf16 (generators and critics in half precision,
    /// InstanceNorm in f32, a loss scaler each) follows the f32 run from the same weights, both
    /// losses step by step to 3% (the largest gaps on flex: 1.1% in f16, 0.4% in bf16), and
    /// improves the round trip as f32 does.
    #[test]
    fn half_precision_training_follows_the_f32_run() {
        let device = crate::cpu().autodiff();
        let (gan, critics) = tiny_networks(&device);
        let (gan, critics) = (fixed_weights(gan), fixed_weights(critics));
        let run = |precision| {
            short_training(precision)
                .run(gan.clone(), critics.clone(), &device, |_, _, _| {})
                .1
        };
        let reference = run(Precision::F32);
        for precision in [Precision::F16, Precision::BF16] {
            let report = run(precision);
            let relative = |loss: f32| 0.03 * loss.abs();
            for (half, full) in [
                (&report.generator_losses, &reference.generator_losses),
                (&report.critic_losses, &reference.critic_losses),
            ] {
                assert_follows(precision, half, full, relative);
            }
            assert!(
                report.cycle_error < report.initial_cycle_error,
                "{precision}: cycle error {} → {} (f32: {})",
                report.initial_cycle_error,
                report.cycle_error,
                reference.cycle_error
            );
        }
    }

    /// Generators of 4 filters with one residual block, critics of 4 filters and 2 layers.
    fn tiny_networks(device: &Device) -> (CycleGan, Critics) {
        let generator = || {
            ResnetGeneratorConfig::new()
                .with_ngf(4)
                .with_n_blocks(1)
                .init(device)
                .unwrap()
        };
        let critic = || {
            PatchDiscriminatorConfig::new()
                .with_ndf(4)
                .with_n_layers(2)
                .init(device)
                .unwrap()
        };
        (
            CycleGan {
                a_to_b: generator(),
                b_to_a: generator(),
            },
            Critics {
                a: critic(),
                b: critic(),
            },
        )
    }

    /// 10 steps of 2 scenes a domain.
    fn short_training(precision: Precision) -> CycleGanTraining {
        CycleGanTraining {
            steps: 10,
            batch_size: 2,
            lr: 5e-3,
            seed: 2,
            test_images: 4,
            precision,
            ..Default::default()
        }
    }
}
