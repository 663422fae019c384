"""Meta-gradients through an inner loop: first order, and the ways of
computing the exact second-order one.

For theta'_i = U^k(theta) (k inner steps on the support set) and the query
loss L(theta'_i), d L / d theta = (d theta'_i / d theta)^T grad L(theta'_i).
``MetaGradient`` picks how:

- first order: d theta'_i / d theta = I, the query gradient at theta'_i.
- stored (default): one tape over the unrolled (or while-loop) inner loop
  and the query loss; every inner step's activations are kept.
- ``recompute``: the forward pass keeps only the parameters (and inner
  optimizer state) before each inner step; the backward pass walks the steps
  in reverse, recomputing one step's activations under a tape to take that
  step's vector-Jacobian product (a Hessian-vector product). Peak memory
  holds one step's activations plus k copies of the adapted parameters, for
  about one more inner step of compute per step. The last step's activations
  are used as soon as they are made, so they are kept, not recomputed.
  ``recompute_steps`` recomputes only the first that many steps and keeps
  the later ones' activations under one tape (memory between the two).
  With ``unroll=False`` and more than one step both passes are
  ``tf.while_loop``s over ``TensorArray``s that recompute every step, so
  neither graph nor tensor memory grows with k.
- ``second_order_steps``: second derivatives through only the last this many
  inner steps; the earlier ones are first order.
- ``multi_step``: the meta-loss is a weighted sum of the query losses after
  every inner step (MAML++'s multi-step loss), one tape over the unrolled
  loop.

First order with learned inner step sizes (LSLR, Meta-SGD): theta' = theta -
alpha * g with g's gradient stopped, so d theta'/d theta = I and alpha keeps
its gradient -g * dL/d theta' (one tape over the loop, no second derivative).

A user's inner loss (``InnerLoop``'s ``inner_loss``) makes each inner step a
map (phi, theta) -> phi' that reads theta explicitly (iMAML's proximal term
lambda / 2 * ||phi - theta||^2). The stored forms differentiate it as any
other op. The recomputed reverse pass takes each step's VJP with respect
to phi, the optimizer state and every tensor of theta the step reads
(``InnerLoop.explicit``), and adds the theta part to the meta-gradient. The
inner optimizer's initial state ``init(phi_0)`` (phi_0 = theta's adapted
tensors) is differentiated too: the recomputed passes pull the state's
cotangent back through ``init`` (nothing for the built-in optimizers, whose
state starts at zero). First order stops the whole inner gradient, the
inner loss's theta term with it: d theta'/d theta = I, the query gradient at
theta' (the standard approximation; the proximal term is zero at the first
step and only shapes theta').

Every variant gives the same meta-gradient (tests compare them with each
other and with central finite differences in float64).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tensorflow as tf

from tfmeta.core.inner_loop import FastWeights, InnerLoop, SupportTask

# fast weights -> (query outputs, query loss)
QueryFunction = Callable[[FastWeights], tuple[tf.Tensor, tf.Tensor]]
ZERO = tf.UnconnectedGradients.ZERO


def query_gradient(query: QueryFunction, fast: FastWeights):
    """(gradient of the query loss at ``fast``, the loss, the outputs)."""
    with tf.GradientTape() as tape:
        tape.watch(fast)
        outputs, loss = query(fast)
    return tape.gradient(loss, fast, unconnected_gradients=ZERO), loss, outputs


@dataclasses.dataclass(frozen=True)
class MetaGradient:
    """How a task's meta-gradient is formed (module docstring)."""

    first_order: bool = False
    second_order_steps: int | None = None
    recompute: bool = False
    recompute_steps: int | None = None

    def __post_init__(self):
        check_meta_gradient(
            self.first_order,
            self.second_order_steps,
            self.recompute,
            self.recompute_steps,
        )

    def __call__(
        self,
        inner: InnerLoop,
        params: FastWeights,
        task: SupportTask,
        steps: int,
        query: QueryFunction,
    ):
        """(meta_gradient, query loss, query outputs, theta'_i) for one task."""
        if self.first_order and inner.learns_rates:
            return stored(inner, params, task, steps, steps, query)
        if self.first_order:
            fast = inner.run(params, task, steps, differentiable=False)
            meta_gradient, loss, outputs = query_gradient(query, fast)
            return meta_gradient, loss, outputs, fast
        second = steps if self.second_order_steps is None else self.second_order_steps
        first_order_steps = max(0, steps - second)
        if not self.recompute:
            return stored(inner, params, task, steps, first_order_steps, query)
        if steps == 0:
            meta_gradient, loss, outputs = query_gradient(query, params)
            return meta_gradient, loss, outputs, params
        if not inner.unroll and steps > 1:
            return recomputed_loop(inner, params, task, steps, first_order_steps, query)
        kept_from = steps - 1
        if self.recompute_steps is not None:
            kept_from = min(self.recompute_steps, kept_from)
        return recomputed(
            inner, params, task, steps, first_order_steps, query, kept_from
        )

    def multi_step(
        self,
        inner: InnerLoop,
        params: FastWeights,
        task: SupportTask,
        steps: int,
        query_after: Callable[[int], QueryFunction],
        weights: tf.Tensor,
    ):
        """(meta_gradient, last query loss, last outputs, theta'_i) for the
        meta-loss sum_s weights[s - 1] * L(theta'_s; D^val), s = 1..steps;
        ``query_after(s)`` is the query function after s steps. The stored
        form (an error with ``recompute``)."""
        if self.recompute:
            raise ValueError("the multi-step loss does not combine with recompute")
        if steps == 0:
            meta_gradient, loss, outputs = query_gradient(query_after(0), params)
            return meta_gradient, loss, outputs, params
        second = steps if self.second_order_steps is None else self.second_order_steps
        first_order_steps = steps if self.first_order else max(0, steps - second)
        with tf.GradientTape() as tape:
            tape.watch(params)
            trajectory = inner.run(
                params, task, steps, True, first_order_steps, trajectory=True
            )
            losses = []
            for step, fast in enumerate(trajectory, start=1):
                outputs, loss = query_after(step)(fast)
                losses.append(loss)
            meta_loss = tf.add_n([weights[s] * loss for s, loss in enumerate(losses)])
        meta_gradient = tape.gradient(meta_loss, params, unconnected_gradients=ZERO)
        return meta_gradient, losses[-1], outputs, trajectory[-1]


# MAML++'s multi-step loss: times 1/S, the code's min_value_for_non_final_losses.
MIN_NON_FINAL_WEIGHT = 0.03


def importance_vector(steps: int, progress: tf.Tensor, dtype) -> tf.Tensor:
    """MAML++'s multi-step loss weights v ``[steps]`` (``MetaGradient.multi_step``)
    at ``progress`` (fraction of the annealing done); the last step alone
    from progress 1 on (the formula: ``tfmeta.algorithms.maml_plus_plus``)."""
    progress = tf.cast(progress, dtype)
    last = tf.one_hot(steps - 1, steps, dtype=dtype)
    if steps == 1:
        return last
    floor = MIN_NON_FINAL_WEIGHT / steps
    non_final = tf.maximum(1.0 / steps - progress / steps, floor)
    final = tf.minimum(
        1.0 / steps + progress * (steps - 1) / steps, 1.0 - (steps - 1) * floor
    )
    annealed = tf.concat([tf.fill([steps - 1], non_final), [final]], axis=0)
    return tf.where(progress < 1.0, annealed, last)


def check_meta_gradient(
    first_order: bool,
    second_order_steps: int | None,
    recompute: bool,
    recompute_steps: int | None,
) -> None:
    """Raises ValueError for a combination that cannot work (a learner adds
    the rules of its inner loop's form, e.g. ``MAML.check_arguments``)."""
    if second_order_steps is not None and second_order_steps < 0:
        raise ValueError(
            f"second_order_steps must be >= 0 or None, got {second_order_steps}"
        )
    if recompute and first_order:
        raise ValueError(
            "recompute applies to second-order MAML: first-order MAML keeps no "
            "inner-loop activations for the meta-gradient"
        )
    if recompute_steps is None:
        return
    if recompute_steps < 0:
        raise ValueError(f"recompute_steps must be >= 0 or None, got {recompute_steps}")
    if not recompute:
        raise ValueError(
            "recompute_steps needs recompute=True: without it no inner step is recomputed"
        )


def stored(inner, params, task, steps, first_order_steps, query):
    """One tape over the inner loop and the query loss."""
    with tf.GradientTape() as tape:
        tape.watch(params)
        fast = inner.run(params, task, steps, True, first_order_steps)
        outputs, loss = query(fast)
    meta_gradient = tape.gradient(loss, params, unconnected_gradients=ZERO)
    return meta_gradient, loss, outputs, fast


def _step_vjp(
    inner,
    params,
    before,
    state_before,
    structure,
    step,
    task,
    first_order,
    cot,
    state_cot,
):
    """Recompute inner step ``step`` from ``before`` (adapted tensors) and the
    flat ``state_before`` under a tape, and pull the cotangents of its
    outputs back: (cotangent of ``before``, of the state, of the parameters
    the step reads explicitly, ``inner.explicit``)."""
    sources = (before, state_before, [params[i] for i in inner.explicit])
    with tf.GradientTape() as tape:
        tape.watch(sources)
        after, state_after = inner.step(
            params,
            before,
            tf.nest.pack_sequence_as(structure, state_before),
            step,
            task,
            first_order=first_order,
        )
    return tape.gradient(
        [*after, *tf.nest.flatten(state_after)],
        sources,
        output_gradients=[*cot, *state_cot],
        unconnected_gradients=ZERO,
    )


def _assemble(inner, cotangent, explicit_gradient):
    """The meta-gradient in the order of the parameters: the cotangent of
    phi_0 = theta's adapted tensors, plus the explicit gradient of theta."""
    meta_gradient = [None] * (len(inner.adapted) + len(inner.fixed))
    for i, g in zip(inner.adapted, cotangent):
        meta_gradient[i] = g
    for i, g in zip(inner.explicit, explicit_gradient):
        meta_gradient[i] = g if meta_gradient[i] is None else meta_gradient[i] + g
    return meta_gradient


def _through_init(inner, params, cotangent, state_cotangent):
    """The cotangent of phi_0 plus the part through the inner optimizer's
    ``init(phi_0)`` (a state that depends on theta); unchanged where the
    state does not depend on it (zeros, ``()``)."""
    start = [tf.identity(params[i]) for i in inner.adapted]
    with tf.GradientTape() as tape:
        tape.watch(start)
        state = tf.nest.flatten(inner.optimizer.init(start))
    if not state:
        return cotangent
    grads = tape.gradient(state, start, output_gradients=list(state_cotangent))
    return [c if g is None else c + g for c, g in zip(cotangent, grads)]


def _kept_steps_and_query(
    inner, params, adapted, state, task, first_step, steps, first_order_steps, query
):
    """The inner steps from ``first_step`` on and the query loss under one
    tape (their activations kept). Returns the cotangents of ``adapted`` and
    of the flat ``state`` before ``first_step``, the gradient of the
    parameters the steps read explicitly (``inner.explicit``: those that do
    not adapt, and all of theta under an inner loss), and (query loss,
    outputs, fast weights)."""
    fixed = [params[i] for i in inner.explicit]
    flat_state = tf.nest.flatten(state)
    if inner.inner_loss is not None:  # phi_0 is theta's tensors: a copy apart
        adapted = [tf.identity(t) for t in adapted]
    with tf.GradientTape() as tape:
        tape.watch((adapted, flat_state, fixed))
        after = adapted
        for step in range(first_step, steps):
            after, state = inner.step(
                params, after, state, step, task, first_order=step < first_order_steps
            )
        fast = inner.merge(params, after)
        outputs, loss = query(fast)
    cotangent, state_cotangent, fixed_gradient = tape.gradient(
        loss, (adapted, flat_state, fixed), unconnected_gradients=ZERO
    )
    return cotangent, state_cotangent, fixed_gradient, (loss, outputs, fast)


def recomputed(inner, params, task, steps, first_order_steps, query, recomputed_steps):
    """Reverse mode over the unrolled inner steps, recomputing the activations
    of the first ``recomputed_steps`` of them."""
    adapted = [params[i] for i in inner.adapted]
    state = inner.optimizer.init(adapted)
    stored_steps = []
    for step in range(recomputed_steps):  # forward: keep only the parameters
        stored_steps.append((adapted, state))
        adapted, state = inner.step(params, adapted, state, step, task)
    cotangent, state_cotangent, fixed_gradient, (loss, outputs, fast) = (
        _kept_steps_and_query(
            inner,
            params,
            adapted,
            state,
            task,
            recomputed_steps,
            steps,
            first_order_steps,
            query,
        )
    )
    for step in reversed(range(recomputed_steps)):
        # The recomputation waits for the cotangent of its output, so the
        # executor cannot run every step's recomputation (and hold all the
        # activations) at once.
        with tf.control_dependencies([*cotangent, *state_cotangent]):
            before = [tf.identity(t) for t in stored_steps[step][0]]
            state_before = [
                tf.identity(t) for t in tf.nest.flatten(stored_steps[step][1])
            ]
            gated = [tf.identity(t) for t in params]
        cotangent, state_cotangent, gradient = _step_vjp(
            inner,
            gated,
            before,
            state_before,
            state,
            step,
            task,
            step < first_order_steps,
            cotangent,
            state_cotangent,
        )
        fixed_gradient = [a + g for a, g in zip(fixed_gradient, gradient)]
    cotangent = _through_init(inner, params, cotangent, state_cotangent)
    return _assemble(inner, cotangent, fixed_gradient), loss, outputs, fast


def recomputed_loop(inner, params, task, steps, first_order_steps, query):
    """``recomputed`` with the forward and the reverse pass each a
    ``tf.while_loop``; step ``s``'s parameters and inner optimizer state are
    kept in ``TensorArray``s. Every step, the last too, is recomputed, so the
    graph holds the step twice whatever the number of steps; keeping the last
    step's activations as the unrolled form does would add a third copy
    (measured at 20-way, 5 steps: 4% less time per step for 3 s more compile
    and 60 MiB more memory)."""
    adapted = [params[i] for i in inner.adapted]
    state = inner.optimizer.init(adapted)

    def arrays(values):
        return [
            tf.TensorArray(v.dtype, size=steps, element_shape=v.shape) for v in values
        ]

    def forward(step, adapted, state, kept, kept_state):
        kept = [a.write(step, t) for a, t in zip(kept, adapted)]
        flat = tf.nest.flatten(state)
        kept_state = [a.write(step, t) for a, t in zip(kept_state, flat)]
        adapted, state = inner.step(params, adapted, state, step, task)
        return step + 1, adapted, state, kept, kept_state

    _, adapted, state, kept, kept_state = tf.while_loop(
        lambda step, *_: step < steps,
        forward,
        (
            tf.constant(0),
            adapted,
            state,
            arrays(adapted),
            arrays(tf.nest.flatten(state)),
        ),
        maximum_iterations=steps,
    )
    fast = inner.merge(params, adapted)
    meta_gradient, loss, outputs = query_gradient(query, fast)
    cotangent = [meta_gradient[i] for i in inner.adapted]
    state_cotangent = [tf.zeros_like(t) for t in tf.nest.flatten(state)]
    fixed_gradient = [tf.zeros_like(params[i]) for i in inner.explicit]

    def backward(step, cotangent, state_cotangent, fixed_gradient, first_order):
        cotangent, state_cotangent, gradient = _step_vjp(
            inner,
            [tf.identity(t) for t in params],
            [a.read(step) for a in kept],
            [a.read(step) for a in kept_state],
            state,
            step,
            task,
            first_order,
            cotangent,
            state_cotangent,
        )
        fixed_gradient = [a + g for a, g in zip(fixed_gradient, gradient)]
        return step - 1, cotangent, state_cotangent, fixed_gradient

    # Reverse: the second-order steps (the last ones), then the first-order
    # prefix; one step at a time, so one step's activations are alive.
    first = min(first_order_steps, steps)
    for start, end, first_order in ((first, steps, False), (0, first, True)):
        if end > start:
            _, cotangent, state_cotangent, fixed_gradient = tf.while_loop(
                lambda step, *_, start=start: step >= start,
                lambda step, *carry, first_order=first_order: backward(
                    step, *carry, first_order
                ),
                (tf.constant(end - 1), cotangent, state_cotangent, fixed_gradient),
                maximum_iterations=end - start,
                parallel_iterations=1,
            )
    # The query reads theta's fixed tensors too (the adapted ones it reads at
    # theta', in the cotangent).
    query_reads = {i: meta_gradient[i] for i in inner.fixed}
    fixed_gradient = [
        query_reads[i] + g if i in query_reads else g
        for i, g in zip(inner.explicit, fixed_gradient)
    ]
    cotangent = _through_init(inner, params, cotangent, state_cotangent)
    return _assemble(inner, cotangent, fixed_gradient), loss, outputs, fast
