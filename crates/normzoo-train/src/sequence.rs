//! Sequence modelling on a generated task, for the `transformer` and `lstm` examples: two-digit
//! addition written out as text (`37+58=095`), learned by a causal model that reads the problem
//! and predicts the answer's digits one at a time.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use normzoo_models::{CausalLm, Lstm, LstmConfig, ModelError};

use crate::adam::train_with_adam;
use crate::data::SplitMix;
use crate::precision::Precision;

/// The tokens: the digits, `+` and `=`.
pub const VOCAB: [char; 12] = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '+', '='];
/// Tokens in a problem: `ab+cd=efg`.
pub const PROBLEM_LEN: usize = 9;
/// Tokens before the answer: `ab+cd=`.
pub const PROMPT_LEN: usize = 6;
const PLUS: usize = 10;
const EQUALS: usize = 11;

/// The tokens of `a + b = sum` (`a`, `b` below 100; the sum written with three digits).
pub fn encode(a: usize, b: usize) -> [usize; PROBLEM_LEN] {
    assert!(a < 100 && b < 100, "operands are two-digit: got {a} + {b}");
    let sum = a + b;
    [
        a / 10,
        a % 10,
        PLUS,
        b / 10,
        b % 10,
        EQUALS,
        sum / 100,
        sum / 10 % 10,
        sum % 10,
    ]
}

/// The text of tokens.
pub fn decode(tokens: &[usize]) -> String {
    tokens.iter().map(|&token| VOCAB[token]).collect()
}

/// `len` random problems drawn from `seed`, as a `[len, 9]` token tensor.
pub fn problems(len: usize, seed: u64, device: &Device) -> Tensor<2, Int> {
    let mut rng = SplitMix(seed);
    let tokens: Vec<i64> = (0..len)
        .flat_map(|_| {
            let (a, b) = ((rng.next() % 100) as usize, (rng.next() % 100) as usize);
            encode(a, b).map(|token| token as i64)
        })
        .collect();
    Tensor::from_data(TensorData::new(tokens, [len, PROBLEM_LEN]), device)
}

/// An LSTM language model: token embeddings, an [`Lstm`] and a linear head.
#[derive(Module, Debug)]
pub struct LstmLm {
    /// Token embeddings.
    pub embedding: Embedding,
    /// The recurrent trunk.
    pub lstm: Lstm,
    /// Hidden state to next-token logits.
    pub head: Linear,
}

impl LstmLm {
    /// An LSTM language model over [`VOCAB`] with `lstm`'s hidden size (its `d_input` is the
    /// embedding size).
    ///
    /// # Errors
    ///
    /// As [`LstmConfig::init`].
    pub fn new(lstm: &LstmConfig, device: &Device) -> Result<Self, ModelError> {
        Ok(Self {
            embedding: EmbeddingConfig::new(VOCAB.len(), lstm.d_input).init(device),
            lstm: lstm.init(device)?,
            head: LinearConfig::new(lstm.d_hidden, VOCAB.len()).init(device),
        })
    }
}

/// A causal model over [`VOCAB`]: a Transformer or an LSTM.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // modules are built once; boxing would only add noise
pub enum SequenceModel {
    /// A causal Transformer ([`CausalLm`]).
    Transformer(CausalLm),
    /// An LSTM language model.
    Lstm(LstmLm),
}

impl SequenceModel {
    /// Next-token logits at every position.
    ///
    /// # Shapes
    ///
    /// - `tokens`: `[N, T]`
    /// - output: `[N, T, VOCAB.len()]`
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        match self {
            Self::Transformer(model) => model.forward(tokens),
            Self::Lstm(model) => {
                let (hidden, _) = model.lstm.forward(model.embedding.forward(tokens), None);
                model.head.forward(hidden)
            }
        }
    }

    /// The answer-digit logits of whole problems `[N, 9]`: the predictions made at the `=` and
    /// the first two answer digits, `[N·3, VOCAB.len()]`, and their targets `[N·3]`.
    fn answer_logits(&self, problems: Tensor<2, Int>) -> (Tensor<2>, Tensor<1, Int>) {
        let [n, _] = problems.dims();
        let answer = PROBLEM_LEN - PROMPT_LEN;
        let logits = self
            .forward(problems.clone().slice([0..n, 0..PROBLEM_LEN - 1]))
            .slice([0..n, PROMPT_LEN - 1..PROBLEM_LEN - 1])
            .reshape([n * answer, VOCAB.len()]);
        let targets = problems
            .slice([0..n, PROMPT_LEN..PROBLEM_LEN])
            .reshape([n * answer]);
        (logits, targets)
    }

    /// The mean cross-entropy of the answer digits, in f32 whatever precision the model
    /// computes in.
    pub fn loss(&self, problems: Tensor<2, Int>) -> Tensor<1> {
        let (logits, targets) = self.answer_logits(problems);
        let logits = logits.cast(FloatDType::F32);
        CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits, targets)
    }

    /// The fraction of problems whose three answer digits are all predicted right. Each digit
    /// is predicted from the problem and the right digits before it, so this is also the
    /// accuracy of greedy decoding.
    pub fn accuracy(&self, problems: Tensor<2, Int>) -> f64 {
        let [n, _] = problems.dims();
        let answer = PROBLEM_LEN - PROMPT_LEN;
        let (logits, targets) = self.answer_logits(problems);
        let right = logits
            .argmax(1)
            .reshape([n, answer])
            .equal(targets.reshape([n, answer]))
            .int()
            .sum_dim(1)
            .equal_elem(answer as i64)
            .int()
            .sum()
            .into_scalar::<i64>();
        right as f64 / n as f64
    }

    /// Answers `a + b` greedily, one digit at a time.
    pub fn solve(&self, a: usize, b: usize, device: &Device) -> String {
        let mut tokens: Vec<usize> = encode(a, b)[..PROMPT_LEN].to_vec();
        while tokens.len() < PROBLEM_LEN {
            let input = Tensor::<2, Int>::from_data(
                TensorData::new(
                    tokens.iter().map(|&t| t as i64).collect(),
                    [1, tokens.len()],
                ),
                device,
            );
            let logits = self.forward(input);
            let last = tokens.len() - 1;
            let next: Tensor<1, Int> = logits
                .slice([0..1, last..last + 1])
                .reshape([VOCAB.len()])
                .argmax(0);
            tokens.push(next.into_scalar::<i64>() as usize);
        }
        decode(&tokens[PROMPT_LEN..])
    }
}

/// How a [`SequenceModel`] is trained: Adam on fresh random problems every step.
#[derive(Debug, Clone, Copy)]
pub struct SequenceTraining {
    /// Optimizer steps.
    pub steps: usize,
    /// Problems per step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// The seed of the problems.
    pub seed: u64,
    /// Problems the accuracy is measured on (drawn from another seed).
    pub test_problems: usize,
    /// The precision of the training steps (mixed precision for f16 and bf16; see
    /// [`train_with_adam`]); the accuracy is measured in f32.
    pub precision: Precision,
}

impl Default for SequenceTraining {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch_size: 64,
            lr: 3e-3,
            seed: 1,
            test_problems: 1000,
            precision: Precision::F32,
        }
    }
}

/// What training did.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceReport {
    /// The training loss at every step.
    pub losses: Vec<f32>,
    /// The fraction of test problems answered right, before training.
    pub initial_accuracy: f64,
    /// The same after training.
    pub accuracy: f64,
}

impl SequenceTraining {
    /// Trains `model` (built on `device`, an autodiff device), calling `progress(step, loss)`
    /// after every step; returns the trained model in evaluation mode and the report.
    pub fn run(
        &self,
        model: SequenceModel,
        device: &Device,
        mut progress: impl FnMut(usize, f32),
    ) -> (SequenceModel, SequenceReport) {
        let test = problems(self.test_problems, !self.seed, device);
        let initial_accuracy = model.clone().valid().accuracy(test.clone().inner());
        let (model, losses) = train_with_adam(
            model,
            self.steps,
            self.lr,
            self.precision,
            |model, step| {
                model.loss(problems(
                    self.batch_size,
                    self.seed.wrapping_add(step as u64),
                    device,
                ))
            },
            &mut progress,
        );
        let model = model.valid();
        let accuracy = model.accuracy(test.inner());
        let report = SequenceReport {
            losses,
            initial_accuracy,
            accuracy,
        };
        (model, report)
    }
}

#[cfg(test)]
mod tests {
    use normzoo_kernels::backend::{cpu_test_devices, seed_for_test};
    use normzoo_models::{TransformerBlockConfig, TransformerConfig};

    use super::*;
    use crate::fixed_weights::fixed_weights;
    use crate::precision::assert_follows;

    #[test]
    fn problems_are_written_out_as_text() {
        assert_eq!(decode(&encode(37, 58)), "37+58=095");
        assert_eq!(decode(&encode(99, 99)), "99+99=198");
        assert_eq!(decode(&encode(0, 7)), "00+07=007");
        let device = crate::cpu();
        let batch = problems(5, 3, &device);
        assert_eq!(batch.dims(), [5, PROBLEM_LEN]);
        assert_eq!(
            batch.into_data(),
            problems(5, 3, &device).into_data(),
            "seeded"
        );
    }

    /// A one-block Transformer and a small LN-LSTM.
    fn tiny_models(device: &Device) -> [SequenceModel; 2] {
        let block = TransformerBlockConfig::new(16, 2).with_d_ff(32);
        let transformer = TransformerConfig::new(VOCAB.len(), PROBLEM_LEN, block)
            .with_num_layers(1)
            .init_causal_lm(device)
            .unwrap();
        let lstm = LstmLm::new(&LstmConfig::layer_normalized(8, 16), device).unwrap();
        [
            SequenceModel::Transformer(transformer),
            SequenceModel::Lstm(lstm),
        ]
    }

    /// 15 steps of 16 problems.
    fn short_training(precision: Precision) -> SequenceTraining {
        SequenceTraining {
            steps: 15,
            batch_size: 16,
            lr: 1e-2,
            seed: 5,
            test_problems: 32,
            precision,
        }
    }

    /// A few steps on tiny models lower the answer loss, for both architectures and on each
    /// CPU backend.
    #[test]
    fn a_few_steps_lower_the_loss() {
        for (backend, device) in cpu_test_devices() {
            let device = device.autodiff();
            let _seed = seed_for_test(&device, 3);
            let training = short_training(Precision::F32);
            for model in tiny_models(&device) {
                let mut steps = 0;
                let (model, report) = training.run(model, &device, |_, _| steps += 1);
                assert_eq!(steps, 15);
                let (first, last) = (report.losses[0], report.losses[14]);
                assert!(last < first, "[{backend}] loss {first} → {last}");
                assert!((0.0..=1.0).contains(&report.accuracy));
                let answer = model.solve(12, 34, &device.clone().inner());
                assert_eq!(answer.len(), 3, "three answer tokens: {answer}");
            }
        }
    }

    /// Training in f16 and bf16 (mixed precision: the LSTM's state, the attention and the
    /// heads in half precision, the normalizers in f32) follows the f32 run from the same
    /// weights, step by step, to 0.005 in f16 and 0.02 in bf16, for both architectures (the
    /// largest gaps on flex: 0.0006 and 0.006, at losses falling from 3.7 and 2.5).
    #[test]
    fn half_precision_training_follows_the_f32_run() {
        let device = crate::cpu().autodiff();
        for model in tiny_models(&device).map(fixed_weights) {
            let run = |precision| {
                let training = short_training(precision);
                training.run(model.clone(), &device, |_, _| {}).1.losses
            };
            let reference = run(Precision::F32);
            assert!(reference[14] < reference[0], "f32 learns: {reference:?}");
            for (precision, tolerance) in [(Precision::F16, 0.005), (Precision::BF16, 0.02)] {
                assert_follows(precision, &run(precision), &reference, |_| tolerance);
            }
        }
    }
}
