//! How every fused op of this crate records its backward pass with burn's autodiff, on every
//! backend: the forward kernel runs on the inner backend's tensors and returns, beside its
//! output, what its backward pass needs (a state implementing [`FusedBackward`]); when any
//! input is tracked, [`recorded`] stores that state in the graph, and the backward step hands
//! it the output's gradient and registers the gradients it returns for the tracked inputs.

use std::fmt::Debug;
use std::marker::PhantomData;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend};

/// What a fused op's forward pass saved for its backward pass, and that backward pass.
pub(crate) trait FusedBackward<B: Backend, const N: usize>:
    Clone + Send + Debug + 'static
{
    /// The gradients of the op's `N` inputs from its output's. `tracked` says which inputs
    /// need one; an untracked input's may be left out (`None`) or computed and dropped.
    fn gradients(
        self,
        output_grad: FloatTensor<B>,
        tracked: [bool; N],
    ) -> [Option<FloatTensor<B>>; N];
}

/// Runs `forward` on the inner tensors of `inputs` and, when any of them is tracked, records
/// the state it returns as the op's backward step. Called as `recorded::<C, _, _, N>`: the
/// checkpoint strategy `C` is not part of the tensors' types.
pub(crate) fn recorded<C, B, S, const N: usize>(
    inputs: [FloatTensor<Autodiff<B, C>>; N],
    forward: impl FnOnce([FloatTensor<B>; N]) -> (FloatTensor<B>, S),
) -> FloatTensor<Autodiff<B, C>>
where
    B: Backend,
    C: CheckpointStrategy,
    S: FusedBackward<B, N>,
{
    let guards = inputs.each_ref().map(|input| input.node());
    let inputs = inputs.map(|input| input.into_primitive());
    match Recorded::<S>(PhantomData)
        .prepare::<C>(guards)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (output, state) = forward(inputs);
            prep.finish(state, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(inputs).0),
    }
}

/// The backward step of a fused op whose forward pass saved `S`.
struct Recorded<S>(PhantomData<fn() -> S>);

impl<S> Debug for Recorded<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recorded<{}>", std::any::type_name::<S>())
    }
}

impl<B: Backend, S: FusedBackward<B, N>, const N: usize> Backward<B, N> for Recorded<S> {
    type State = S;

    fn backward(self, ops: Ops<S, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let output_grad = grads.consume::<B>(&ops.node);
        let tracked = ops.parents.each_ref().map(Option::is_some);
        let input_grads = ops.state.gradients(output_grad, tracked);
        for (parent, grad) in ops.parents.into_iter().zip(input_grads) {
            if let (Some(parent), Some(grad)) = (parent, grad) {
                grads.register::<B>(parent.id, grad);
            }
        }
    }
}
