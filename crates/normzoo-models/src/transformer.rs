//! A Transformer block with a swappable normalizer in the pre-norm or post-norm position, and a
//! small encoder classifier and a small causal language model built from it.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::attention::{
    MhaInput, MultiHeadAttention, MultiHeadAttentionConfig, generate_autoregressive_mask,
};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::{Bool, Device, Distribution, Int, Tensor};
use normzoo_kernels::gelu;
use normzoo_norm::{Norm, NormConfig};
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Where a [`TransformerBlock`] normalizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NormPosition {
    /// `x + f(norm(x))` for each sub-layer (GPT-2 and later; trains without warm-up).
    Pre,
    /// `norm(x + f(x))` for each sub-layer (the original Transformer, BERT).
    Post,
}

/// Configuration of a [`TransformerBlock`].
#[derive(Config, Debug)]
pub struct TransformerBlockConfig {
    /// The model width.
    pub d_model: usize,
    /// Attention heads; must divide `d_model`.
    pub n_heads: usize,
    /// The hidden width of the MLP. Default: `4·d_model` when 0.
    #[config(default = 0)]
    pub d_ff: usize,
    /// Dropout after attention and after the MLP. Default: 0.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// The normalizer. Default: `layer`. `batch` normalizes each channel over the batch and the
    /// tokens; `group` and `instance` see the sequence as `[N, C, T]`; `layer2d` does not apply.
    #[config(default = "NormConfig::layer()")]
    pub norm: NormConfig,
    /// Pre-norm or post-norm. Default: [`NormPosition::Pre`].
    #[config(default = "NormPosition::Pre")]
    pub position: NormPosition,
}

/// Multi-head self-attention and a GELU MLP, each a residual sub-layer with a normalizer.
///
/// With `layer`, no dropout and [`NormPosition::Post`] this is PyTorch's
/// `nn.TransformerEncoderLayer(d_model, n_heads, d_ff, activation="gelu")` (the same parameter
/// count); [`NormPosition::Pre`] is its `norm_first=True`.
#[derive(Module, Debug)]
pub struct TransformerBlock {
    /// Self-attention.
    pub attn: MultiHeadAttention,
    /// The attention sub-layer's normalizer.
    pub norm1: Norm,
    /// The MLP's first layer (`d_model` → `d_ff`).
    pub linear1: Linear,
    /// The MLP's second layer (`d_ff` → `d_model`).
    pub linear2: Linear,
    /// The MLP sub-layer's normalizer.
    pub norm2: Norm,
    /// Dropout on each sub-layer's output.
    pub dropout: Dropout,
    /// Pre-norm or post-norm.
    #[module(skip)]
    pub position: NormPosition,
}

const MODEL: &str = "TransformerBlock";

/// Normalizes a token sequence `[N, T, C]`: last-axis normalizers directly, channels-first ones
/// (batch, group, instance) on `[N, C, T]`.
pub(crate) fn normalize_tokens(norm: &Norm, x: Tensor<3>) -> Tensor<3> {
    match norm {
        Norm::Batch(_) | Norm::Group(_) | Norm::Instance(_) => {
            norm.forward(x.swap_dims(1, 2)).swap_dims(1, 2)
        }
        _ => norm.forward(x),
    }
}

impl TransformerBlockConfig {
    /// Builds the block.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] when a size is zero or `n_heads` does not divide
    /// `d_model`; [`ModelError::UnsupportedNorm`] for `layer2d`.
    pub fn init(&self, device: &Device) -> Result<TransformerBlock, ModelError> {
        if self.d_model == 0 || self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            return Err(ModelError::InvalidConfig {
                model: MODEL,
                message: format!(
                    "d_model ({}) must be a positive multiple of n_heads ({})",
                    self.d_model, self.n_heads
                ),
            });
        }
        if let NormConfig::Layer2d(_) = self.norm {
            return Err(ModelError::UnsupportedNorm {
                model: MODEL,
                norm: self.norm.to_string(),
                reason: "it needs [N, C, H, W] feature maps, a Transformer has [N, T, C] tokens: \
                         use `layer`"
                    .into(),
            });
        }
        let d_ff = if self.d_ff == 0 {
            4 * self.d_model
        } else {
            self.d_ff
        };
        Ok(TransformerBlock {
            attn: MultiHeadAttentionConfig::new(self.d_model, self.n_heads)
                .with_dropout(self.dropout)
                .init(device),
            norm1: self.norm.init(self.d_model, device)?,
            linear1: LinearConfig::new(self.d_model, d_ff).init(device),
            linear2: LinearConfig::new(d_ff, self.d_model).init(device),
            norm2: self.norm.init(self.d_model, device)?,
            dropout: DropoutConfig::new(self.dropout).init(),
            position: self.position,
        })
    }
}

impl TransformerBlock {
    /// One block; `mask` (`[N, T, T]`, true where attention is forbidden) makes it causal.
    ///
    /// # Shapes
    ///
    /// - `input`: `[N, T, d_model]`
    /// - output: `[N, T, d_model]`
    pub fn forward(&self, input: Tensor<3>, mask: Option<Tensor<3, Bool>>) -> Tensor<3> {
        let attend = |x: Tensor<3>| {
            let query = MhaInput::self_attn(x);
            let query = match mask.clone() {
                Some(mask) => query.mask_attn(mask),
                None => query,
            };
            self.dropout.forward(self.attn.forward(query).context)
        };
        let mlp = |x: Tensor<3>| {
            let hidden = gelu(self.linear1.forward(x));
            self.dropout.forward(self.linear2.forward(hidden))
        };
        match self.position {
            NormPosition::Pre => {
                let x = input
                    .clone()
                    .add(attend(normalize_tokens(&self.norm1, input)));
                x.clone().add(mlp(normalize_tokens(&self.norm2, x)))
            }
            NormPosition::Post => {
                let x = normalize_tokens(&self.norm1, input.clone().add(attend(input)));
                normalize_tokens(&self.norm2, x.clone().add(mlp(x)))
            }
        }
    }
}

/// Configuration of a [`TransformerEncoder`] classifier or a [`CausalLm`].
#[derive(Config, Debug)]
pub struct TransformerConfig {
    /// The vocabulary size.
    pub vocab_size: usize,
    /// The longest sequence (learned positional embeddings).
    pub max_len: usize,
    /// The blocks' configuration.
    pub block: TransformerBlockConfig,
    /// The number of blocks. Default: 2.
    #[config(default = 2)]
    pub num_layers: usize,
}

/// Token and learned positional embeddings, the blocks, and (pre-norm) a final normalizer.
#[derive(Module, Debug)]
pub struct TransformerTrunk {
    /// Token embeddings.
    pub tokens: Embedding,
    /// Learned positional embeddings, `[max_len, d_model]`.
    pub positions: Param<Tensor<2>>,
    /// The blocks.
    pub blocks: Vec<TransformerBlock>,
    /// The final normalizer (pre-norm only: post-norm blocks end normalized).
    pub final_norm: Option<Norm>,
}

impl TransformerConfig {
    fn trunk(&self, device: &Device) -> Result<TransformerTrunk, ModelError> {
        if self.vocab_size == 0 || self.max_len == 0 {
            return Err(ModelError::InvalidConfig {
                model: "Transformer",
                message: format!(
                    "vocab_size ({}) and max_len ({}) must be positive",
                    self.vocab_size, self.max_len
                ),
            });
        }
        let d_model = self.block.d_model;
        let blocks = (0..self.num_layers)
            .map(|_| self.block.init(device))
            .collect::<Result<Vec<_>, _>>()?;
        let final_norm = match self.block.position {
            NormPosition::Pre => Some(self.block.norm.init(d_model, device)?),
            NormPosition::Post => None,
        };
        Ok(TransformerTrunk {
            tokens: EmbeddingConfig::new(self.vocab_size, d_model).init(device),
            positions: Param::from_tensor(Tensor::random(
                [self.max_len, d_model],
                Distribution::Normal(0.0, 0.02),
                device,
            )),
            blocks,
            final_norm,
        })
    }

    /// Builds an encoder classifier with `num_classes` outputs.
    ///
    /// # Errors
    ///
    /// As [`TransformerBlockConfig::init`], and for a zero vocabulary or length.
    pub fn init_encoder(
        &self,
        num_classes: usize,
        device: &Device,
    ) -> Result<TransformerEncoder, ModelError> {
        Ok(TransformerEncoder {
            trunk: self.trunk(device)?,
            head: LinearConfig::new(self.block.d_model, num_classes).init(device),
        })
    }

    /// Builds a causal language model.
    ///
    /// # Errors
    ///
    /// As [`TransformerBlockConfig::init`], and for a zero vocabulary or length.
    pub fn init_causal_lm(&self, device: &Device) -> Result<CausalLm, ModelError> {
        Ok(CausalLm {
            trunk: self.trunk(device)?,
            head: LinearConfig::new(self.block.d_model, self.vocab_size).init(device),
        })
    }
}

impl TransformerTrunk {
    /// `[N, T]` token ids → `[N, T, d_model]` features.
    ///
    /// # Panics
    ///
    /// When `T` exceeds `max_len`.
    pub fn forward(&self, tokens: Tensor<2, Int>, causal: bool) -> Tensor<3> {
        let [n, t] = tokens.dims();
        let [max_len, d_model] = self.positions.dims();
        assert!(
            t <= max_len,
            "Transformer: sequence length {t} exceeds max_len {max_len}"
        );
        let positions = self
            .positions
            .val()
            .narrow(0, 0, t)
            .reshape([1, t, d_model]);
        let mut x = self.tokens.forward(tokens).add(positions);
        let mask = causal.then(|| generate_autoregressive_mask(n, t, &x.device()));
        for block in &self.blocks {
            x = block.forward(x, mask.clone());
        }
        match &self.final_norm {
            Some(norm) => normalize_tokens(norm, x),
            None => x,
        }
    }
}

/// A Transformer encoder classifier: the trunk, mean pooling over tokens, a linear head.
#[derive(Module, Debug)]
pub struct TransformerEncoder {
    /// Embeddings, blocks and final normalizer.
    pub trunk: TransformerTrunk,
    /// The classifier.
    pub head: Linear,
}

impl TransformerEncoder {
    /// `[N, T]` token ids → `[N, num_classes]` logits.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<2> {
        let x = self.trunk.forward(tokens, false);
        let [n, _, d] = x.dims();
        self.head.forward(x.mean_dim(1).reshape([n, d]))
    }
}

/// A causal language model: the trunk with an autoregressive mask and a linear head over the
/// vocabulary.
#[derive(Module, Debug)]
pub struct CausalLm {
    /// Embeddings, blocks and final normalizer.
    pub trunk: TransformerTrunk,
    /// Next-token logits.
    pub head: Linear,
}

impl CausalLm {
    /// `[N, T]` token ids → `[N, T, vocab_size]` next-token logits (position `t` sees tokens
    /// `0..=t` only).
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.head.forward(self.trunk.forward(tokens, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use normzoo_kernels::backend::{cpu_test_devices, seed_for_test};

    use crate::common::{cpu, sgd_steps};
    use crate::num_trainable_params;

    /// PyTorch's `nn.TransformerEncoderLayer(64, 4, 256)` has 49,984 parameters.
    #[test]
    fn block_has_pytorchs_parameter_count() {
        let device = cpu().autodiff();
        let block = TransformerBlockConfig::new(64, 4)
            .with_d_ff(256)
            .init(&device)
            .unwrap();
        assert_eq!(num_trainable_params(&block), 49_984);
        // RMSNorm has no shift: 2·64 fewer.
        let rms = TransformerBlockConfig::new(64, 4)
            .with_d_ff(256)
            .with_norm(NormConfig::rms())
            .init(&device)
            .unwrap();
        assert_eq!(num_trainable_params(&rms), 49_984 - 128);
    }

    #[test]
    fn refusals() {
        let device = cpu();
        assert!(TransformerBlockConfig::new(10, 3).init(&device).is_err());
        let err = TransformerBlockConfig::new(8, 2)
            .with_norm(NormConfig::layer2d())
            .init(&device)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("TransformerBlock: the normalizer `layer2d` does not apply")
        );
    }

    /// A causal model's logits at position t do not depend on later tokens.
    #[test]
    fn causal_lm_does_not_see_the_future() {
        let device = cpu();
        for norm in ["layer", "rms", "none"] {
            let block = TransformerBlockConfig::new(16, 2).with_norm(norm.parse().unwrap());
            let lm = TransformerConfig::new(11, 8, block)
                .init_causal_lm(&device)
                .unwrap();
            let a = Tensor::<2, Int>::from_ints([[1, 2, 3, 4, 5]], &device);
            let b = Tensor::<2, Int>::from_ints([[1, 2, 3, 9, 10]], &device);
            let (la, lb) = (lm.forward(a), lm.forward(b));
            assert_eq!(la.dims(), [1, 5, 11]);
            la.slice([0..1, 0..3]).into_data().assert_approx_eq::<f32>(
                &lb.slice([0..1, 0..3]).into_data(),
                burn::tensor::Tolerance::absolute(1e-5),
            );
        }
    }

    /// The encoder classifier learns a fixed batch with every normalizer in both positions.
    #[test]
    fn a_few_steps_lower_the_loss() {
        for (backend, device) in cpu_test_devices() {
            let device = device.autodiff();
            let _seed = seed_for_test(&device, 7); // repeatable initialisation and data
            let tokens = Tensor::<2, Int>::from_ints(
                [[1, 2, 3, 4], [4, 3, 2, 1], [5, 5, 6, 6], [7, 1, 7, 1]],
                &device,
            );
            let labels = Tensor::<1, Int>::from_ints([0, 1, 0, 1], &device);
            for norm in ["layer", "rms", "batch", "none"] {
                for position in [NormPosition::Pre, NormPosition::Post] {
                    let block = TransformerBlockConfig::new(16, 2)
                        .with_norm(norm.parse().unwrap())
                        .with_position(position);
                    let model = TransformerConfig::new(8, 4, block)
                        .init_encoder(2, &device)
                        .unwrap();
                    let (_, first, last) =
                        sgd_steps(model, 8, 0.05, |model: &TransformerEncoder| {
                            burn::nn::loss::CrossEntropyLossConfig::new()
                                .init(&device)
                                .forward(model.forward(tokens.clone()), labels.clone())
                        });
                    assert!(
                        last < first,
                        "[{backend}] {norm} {position:?}: loss {first} → {last}"
                    );
                }
            }
        }
    }
}
