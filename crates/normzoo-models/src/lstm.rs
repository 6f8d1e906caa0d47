//! The LSTM and the layer-normalized LSTM of Ba, Kiros & Hinton (2016), batch-first and
//! multi-layer, with a swappable normalizer.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor};
use normzoo_norm::{Norm, NormConfig};

use crate::ModelError;

/// Configuration of an [`Lstm`].
#[derive(Config, Debug)]
pub struct LstmConfig {
    /// Features of each input step.
    pub d_input: usize,
    /// The hidden (and cell) size of every layer.
    pub d_hidden: usize,
    /// Stacked layers. Default: 1.
    #[config(default = 1)]
    pub num_layers: usize,
    /// The normalizer of the gate pre-activations and the cell. Default: `none`, the plain LSTM;
    /// `layer` is the layer-normalized LSTM; `batch` normalizes over the batch at each step
    /// (running statistics shared by the steps); `rms` and `group:G` also apply. `layer2d` and
    /// `instance` do not (an LSTM's features are `[N, C]`).
    #[config(default = "NormConfig::None")]
    pub norm: NormConfig,
}

impl LstmConfig {
    /// The layer-normalized LSTM (Ba, Kiros & Hinton, 2016).
    pub fn layer_normalized(d_input: usize, d_hidden: usize) -> Self {
        Self::new(d_input, d_hidden).with_norm(NormConfig::layer())
    }
}

/// A multi-layer, batch-first LSTM. Each layer, at each step `t`:
///
/// ```text
/// [i, f, g, o] = norm_x(W_x·x_t) + norm_h(W_h·h_{t−1})
/// c_t = σ(f) ⊙ c_{t−1} + σ(i) ⊙ tanh(g)
/// h_t = σ(o) ⊙ tanh(norm_c(c_t))
/// ```
///
/// the gate order of PyTorch's `nn.LSTM`. With `none` the normalizers are the identity and
/// `W_x`, `W_h` carry PyTorch's two biases (`b_ih`, `b_hh`): `nn.LSTM`'s parameter count. With a
/// normalizer the linear maps have no bias (its shift plays that part) and the carried `c_t` is
/// never normalized, as in the paper (burn's own LSTM examples differ).
#[derive(Module, Debug)]
pub struct Lstm {
    /// The layers, input first.
    pub layers: Vec<LstmLayer>,
}

/// One LSTM layer.
#[derive(Module, Debug)]
pub struct LstmLayer {
    /// `W_x`: input → the four gates.
    pub input: Linear,
    /// `W_h`: hidden state → the four gates.
    pub hidden: Linear,
    /// `norm_x`, over the `4·d_hidden` input pre-activations.
    pub norm_input: Norm,
    /// `norm_h`, over the `4·d_hidden` recurrent pre-activations.
    pub norm_hidden: Norm,
    /// `norm_c`, over the `d_hidden` cell values before the output `tanh`.
    pub norm_cell: Norm,
}

/// The hidden and cell state of one layer, each `[N, d_hidden]`.
#[derive(Debug, Clone)]
pub struct LstmState {
    /// `h`.
    pub hidden: Tensor<2>,
    /// `c`.
    pub cell: Tensor<2>,
}

const MODEL: &str = "Lstm";

impl LstmConfig {
    /// Builds the LSTM.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for a zero size or layer count,
    /// [`ModelError::UnsupportedNorm`] for `layer2d` and `instance`, and the normalizer's own
    /// error.
    pub fn init(&self, device: &Device) -> Result<Lstm, ModelError> {
        if self.d_input == 0 || self.d_hidden == 0 || self.num_layers == 0 {
            return Err(ModelError::InvalidConfig {
                model: MODEL,
                message: format!(
                    "d_input ({}), d_hidden ({}) and num_layers ({}) must be positive",
                    self.d_input, self.d_hidden, self.num_layers
                ),
            });
        }
        if let NormConfig::Layer2d(_) | NormConfig::Instance(_) = self.norm {
            return Err(ModelError::UnsupportedNorm {
                model: MODEL,
                norm: self.norm.to_string(),
                reason: "an LSTM's features are [N, C], with no spatial axes: use `layer`".into(),
            });
        }
        let bias = matches!(self.norm, NormConfig::None);
        let gates = 4 * self.d_hidden;
        let layers = (0..self.num_layers)
            .map(|layer| {
                let d_in = if layer == 0 {
                    self.d_input
                } else {
                    self.d_hidden
                };
                Ok(LstmLayer {
                    input: LinearConfig::new(d_in, gates).with_bias(bias).init(device),
                    hidden: LinearConfig::new(self.d_hidden, gates)
                        .with_bias(bias)
                        .init(device),
                    norm_input: self.norm.init(gates, device)?,
                    norm_hidden: self.norm.init(gates, device)?,
                    norm_cell: self.norm.init(self.d_hidden, device)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(Lstm { layers })
    }
}

impl Lstm {
    /// Runs the sequence through every layer.
    ///
    /// # Shapes
    ///
    /// - `input`: `[N, T, d_input]`
    /// - `state`: one [`LstmState`] per layer, or `None` for zeros
    /// - output: the last layer's `h` at every step, `[N, T, d_hidden]`, and each layer's final
    ///   state
    pub fn forward(
        &self,
        input: Tensor<3>,
        state: Option<Vec<LstmState>>,
    ) -> (Tensor<3>, Vec<LstmState>) {
        let mut states = state.map(Vec::into_iter);
        let mut x = input;
        let mut finals = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let initial = states.as_mut().and_then(Iterator::next);
            let (output, last) = layer.forward(x, initial);
            x = output;
            finals.push(last);
        }
        (x, finals)
    }
}

impl LstmLayer {
    /// `[N, T, d_in]` → `[N, T, d_hidden]` and the final state.
    pub fn forward(&self, input: Tensor<3>, state: Option<LstmState>) -> (Tensor<3>, LstmState) {
        let [n, t, _] = input.dims();
        let device = input.device();
        // W_x·x for every step at once; the normalizers run step by step.
        let projected = self.input.forward(input);
        let d_hidden = projected.dims()[2] / 4;
        // In the input's precision: f32, or half precision under mixed-precision training.
        let zeros = || Tensor::zeros([n, d_hidden], (&device, projected.dtype()));
        let mut state = state.unwrap_or_else(|| LstmState {
            hidden: zeros(),
            cell: zeros(),
        });
        let mut outputs = Vec::with_capacity(t);
        for step in 0..t {
            let x_t = projected
                .clone()
                .narrow(1, step, 1)
                .reshape([n, 4 * d_hidden]);
            let gates = self
                .norm_input
                .forward(x_t)
                .add(self.norm_hidden.forward(self.hidden.forward(state.hidden)));
            let [i, f, g, o] = <[Tensor<2>; 4]>::try_from(gates.chunk(4, 1)).expect("four gates");
            let cell = sigmoid(f).mul(state.cell).add(sigmoid(i).mul(g.tanh()));
            let hidden = sigmoid(o).mul(self.norm_cell.forward(cell.clone()).tanh());
            outputs.push(hidden.clone().unsqueeze_dim(1));
            state = LstmState { hidden, cell };
        }
        (Tensor::cat(outputs, 1), state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use normzoo_kernels::backend::{cpu_test_devices, seed_for_test};

    use crate::common::{cpu, sgd_steps};
    use crate::num_trainable_params;
    use burn::tensor::{Distribution, Tolerance};

    /// `nn.LSTM(10, 20)` has 2,560 parameters and `nn.LSTM(10, 20, num_layers=2)` 5,920; the
    /// layer-normalized one trades the 8·H biases for 2·(2·4H) + 2·H normalizer values.
    #[test]
    fn parameter_counts() {
        let device = cpu().autodiff();
        let plain = LstmConfig::new(10, 20).init(&device).unwrap();
        assert_eq!(num_trainable_params(&plain), 2_560);
        let two = LstmConfig::new(10, 20)
            .with_num_layers(2)
            .init(&device)
            .unwrap();
        assert_eq!(num_trainable_params(&two), 5_920);
        let ln = LstmConfig::layer_normalized(10, 20).init(&device).unwrap();
        assert_eq!(num_trainable_params(&ln), 2_560 - 160 + 320 + 40);
    }

    /// Running a sequence in two halves with the state carried over equals running it whole.
    #[test]
    fn carried_state_continues_the_sequence() {
        let device = cpu();
        for norm in ["none", "layer", "rms"] {
            let lstm = LstmConfig::new(3, 5)
                .with_num_layers(2)
                .with_norm(norm.parse().unwrap())
                .init(&device)
                .unwrap();
            let x = Tensor::<3>::random([2, 6, 3], Distribution::Default, &device);
            let (whole, _) = lstm.forward(x.clone(), None);
            let (first, state) = lstm.forward(x.clone().narrow(1, 0, 4), None);
            let (second, _) = lstm.forward(x.narrow(1, 4, 2), Some(state));
            let halves = Tensor::cat(vec![first, second], 1);
            assert_eq!(whole.dims(), [2, 6, 5]);
            whole
                .into_data()
                .assert_approx_eq::<f32>(&halves.into_data(), Tolerance::absolute(1e-6));
        }
    }

    #[test]
    fn spatial_normalizers_are_refused() {
        let device = cpu();
        for norm in ["layer2d", "instance"] {
            let err = LstmConfig::new(3, 4)
                .with_norm(norm.parse().unwrap())
                .init(&device)
                .unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("Lstm: the normalizer `{norm}`"))
            );
        }
    }

    /// Predicting the running sign of a sequence: a few steps lower the loss with every
    /// applicable normalizer on each CPU backend.
    #[test]
    fn a_few_steps_lower_the_loss() {
        for (backend, device) in cpu_test_devices() {
            let device = device.autodiff();
            let _seed = seed_for_test(&device, 7); // repeatable initialisation and data
            let x = Tensor::<3>::random([8, 5, 2], Distribution::Normal(0.0, 1.0), &device);
            let target = x.clone().sum_dim(2).greater_elem(0.0).float();
            for norm in ["none", "layer", "batch", "rms"] {
                let lstm = LstmConfig::new(2, 8)
                    .with_norm(norm.parse().unwrap())
                    .init(&device)
                    .unwrap();
                let (_, first, last) = sgd_steps(lstm, 10, 0.5, |lstm: &Lstm| {
                    let (h, _) = lstm.forward(x.clone(), None);
                    let prediction = sigmoid(h.narrow(2, 0, 1));
                    prediction.sub(target.clone()).square().mean()
                });
                assert!(last < first, "[{backend}] {norm}: loss {first} → {last}");
            }
        }
    }
}
