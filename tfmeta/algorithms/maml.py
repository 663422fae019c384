"""MAML (Finn, Abbeel and Levine, ICML 2017) and its first-order variant.

For task i with support set D_i^tr and query set D_i^val,
  theta'_i = theta - alpha * grad_theta L(theta; D_i^tr)       (inner_steps times)
and the meta-objective is sum_i L(theta'_i; D_i^val). Its gradient
  d L(theta'_i; D^val) / d theta = (d theta'_i / d theta)^T grad L(theta'_i; D^val)
holds second derivatives through d theta'_i / d theta: computed exactly by
differentiating the unrolled inner loop with nested ``tf.GradientTape``s.
First-order MAML (FOMAML) drops them, d theta'_i / d theta = I, so the
meta-gradient is the query-loss gradient at the adapted weights.
"""

from __future__ import annotations

import tensorflow as tf

from tfmeta.algorithms.base import MetaLearner


class MAML(MetaLearner):
    """MAML; ``first_order=True`` gives FOMAML.

    ``second_order_steps``: differentiate through the second derivatives of
    only the last this many inner steps (the earlier ones are first order),
    which saves memory and time with many inner steps; None: all steps.

    ``recompute``: second order without keeping every inner step's
    activations. The forward pass stores only the parameters (and inner
    optimizer state) before each inner step; the backward pass walks the steps
    in reverse, recomputing one step's activations under a tape to take the
    vector-Jacobian product of that step (a Hessian-vector product) with the
    incoming cotangent. Peak memory then holds one step's activations plus
    ``inner_steps`` copies of the adapted parameters, for about one more inner
    step of compute per step. The last step's activations are used as soon as
    they are made, so they are kept, not recomputed (with one inner step
    nothing is recomputed). The meta-gradient is the same. With
    ``unroll_inner_loop=False`` and more than one step both passes are
    ``tf.while_loop``s (the parameters kept in ``TensorArray``s) that
    recompute every step, so neither the graph nor the tensor memory grows
    with the inner steps.

    ``recompute_steps`` (unrolled inner loop only): with ``recompute``,
    recompute the activations of only the first this many inner steps and
    keep those of the later ones (one tape over them and the query loss),
    trading memory back for time; None: all but the last (at most
    ``inner_steps - 1`` are recomputed).
    """

    name = "maml"

    def __init__(
        self,
        *args,
        first_order: bool = False,
        second_order_steps: int | None = None,
        recompute: bool = False,
        recompute_steps: int | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if second_order_steps is not None and second_order_steps < 0:
            raise ValueError(
                f"second_order_steps must be >= 0 or None, got {second_order_steps}"
            )
        if recompute and first_order:
            raise ValueError(
                "recompute applies to second-order MAML: first-order MAML keeps no "
                "inner-loop activations for the meta-gradient"
            )
        if recompute_steps is not None:
            if not recompute:
                raise ValueError(
                    "recompute_steps needs recompute=True: without it no inner "
                    "step is recomputed"
                )
            if recompute_steps < 0:
                raise ValueError(
                    f"recompute_steps must be >= 0 or None, got {recompute_steps}"
                )
            if not self.unroll_inner_loop and self.inner_steps > 1:
                raise ValueError(
                    "recompute_steps applies to the unrolled inner loop: with "
                    "unroll_inner_loop=False every inner step is recomputed"
                )
        self.first_order = first_order
        self.second_order_steps = second_order_steps
        self.recompute = recompute
        self.recompute_steps = recompute_steps

    def query_outputs(self, fast, support_x, query_x):
        return self.predict(fast, query_x, support_x)

    def task_result(self, support_x, support_y, query_x, query_y, task_seed):
        params = self.parameters()
        if self.first_order:
            fast = self.inner_loop(
                params, support_x, support_y, self.inner_steps, False, task_seed
            )
            meta_gradient, query_loss, outputs = self._query_gradient(
                fast, support_x, query_x, query_y
            )
        else:
            second = (
                self.inner_steps
                if self.second_order_steps is None
                else self.second_order_steps
            )
            if self.recompute:
                return self._recomputed_task_result(
                    support_x,
                    support_y,
                    query_x,
                    query_y,
                    task_seed,
                    first_order_steps=max(0, self.inner_steps - second),
                )
            with tf.GradientTape() as tape:
                tape.watch(params)
                fast = self.inner_loop(
                    params,
                    support_x,
                    support_y,
                    self.inner_steps,
                    True,
                    task_seed,
                    first_order_steps=max(0, self.inner_steps - second),
                )
                outputs = self.query_outputs(fast, support_x, query_x)
                query_loss = self.loss(outputs, query_y)
            meta_gradient = tape.gradient(
                query_loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
        return meta_gradient, query_loss, self.metric(outputs, query_y), fast

    def _query_gradient(self, fast, support_x, query_x, query_y):
        """(gradient of the query loss at ``fast``, the loss, the outputs)."""
        with tf.GradientTape() as tape:
            tape.watch(fast)
            outputs = self.query_outputs(fast, support_x, query_x)
            query_loss = self.loss(outputs, query_y)
        gradient = tape.gradient(
            query_loss, fast, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        return gradient, query_loss, outputs

    def _step_vjp(
        self,
        params,
        before,
        state_before,
        state_structure,
        step,
        task,
        first_order,
        cotangent,
        state_cotangent,
    ):
        """Recompute inner step ``step`` from ``before`` (adapted tensors) and
        the flat ``state_before`` under a tape, and pull the cotangents of its
        outputs back: (cotangent of ``before``, of the state, of the
        parameters that do not adapt)."""
        sources = (before, state_before, [params[i] for i in self._fixed])
        with tf.GradientTape() as tape:
            tape.watch(sources)
            after, state_after = self.inner_step(
                params,
                before,
                tf.nest.pack_sequence_as(state_structure, state_before),
                step,
                task,
                first_order=first_order,
            )
        return tape.gradient(
            [*after, *tf.nest.flatten(state_after)],
            sources,
            output_gradients=[*cotangent, *state_cotangent],
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )

    def _kept_steps_and_query(
        self,
        params,
        adapted,
        state,
        task,
        first_step,
        first_order_steps,
        query_x,
        query_y,
    ):
        """The inner steps from ``first_step`` on and the query loss under one
        tape: their activations are kept, not recomputed (the last step's are
        used as soon as they are made). Returns the cotangents of ``adapted``
        and of the flat inner optimizer ``state`` before ``first_step``, the
        gradient of the parameters that do not adapt, and (query loss, query
        outputs, fast weights)."""
        fixed = [params[i] for i in self._fixed]
        flat_state = tf.nest.flatten(state)
        with tf.GradientTape() as tape:
            tape.watch((adapted, flat_state, fixed))
            after = adapted
            for step in range(first_step, self.inner_steps):
                after, state = self.inner_step(
                    params,
                    after,
                    state,
                    step,
                    task,
                    first_order=step < first_order_steps,
                )
            fast = self._merge(params, after)
            outputs = self.query_outputs(fast, task[0], query_x)
            query_loss = self.loss(outputs, query_y)
        cotangent, state_cotangent, fixed_gradient = tape.gradient(
            query_loss,
            (adapted, flat_state, fixed),
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
        return cotangent, state_cotangent, fixed_gradient, (query_loss, outputs, fast)

    def _assemble(self, cotangent, fixed_gradient):
        """The meta-gradient in the order of the parameters."""
        meta_gradient = [None] * (len(self._adapted) + len(self._fixed))
        for i, g in zip(self._adapted, cotangent):
            meta_gradient[i] = g
        for i, g in zip(self._fixed, fixed_gradient):
            meta_gradient[i] = g
        return meta_gradient

    def _recomputed_task_result(
        self, support_x, support_y, query_x, query_y, task_seed, first_order_steps
    ):
        """``task_result`` of second-order MAML by reverse-mode over the inner
        steps, recomputing the activations of the first ``recompute_steps``
        steps (default all but the last; see ``recompute``)."""
        if self.inner_steps == 0:
            params = self.parameters()
            meta_gradient, query_loss, outputs = self._query_gradient(
                params, support_x, query_x, query_y
            )
            return meta_gradient, query_loss, self.metric(outputs, query_y), params
        if not self.unroll_inner_loop and self.inner_steps > 1:
            return self._recomputed_task_result_looped(
                support_x, support_y, query_x, query_y, task_seed, first_order_steps
            )
        params = self.parameters()
        task = (support_x, support_y, task_seed, True)
        adapted = [params[i] for i in self._adapted]
        state = self.inner_optimizer.init(adapted)
        recomputed = self.inner_steps - 1
        if self.recompute_steps is not None:
            recomputed = min(self.recompute_steps, recomputed)
        stored = []
        for step in range(recomputed):  # forward: keep only the parameters
            stored.append((adapted, state))
            adapted, state = self.inner_step(params, adapted, state, step, task)
        cotangent, state_cotangent, fixed_gradient, (query_loss, outputs, fast) = (
            self._kept_steps_and_query(
                params,
                adapted,
                state,
                task,
                recomputed,
                first_order_steps,
                query_x,
                query_y,
            )
        )
        for step in reversed(range(recomputed)):
            # The recomputation waits for the cotangent of its output, so the
            # executor cannot run every step's recomputation (and hold all the
            # activations) at once.
            with tf.control_dependencies([*cotangent, *state_cotangent]):
                before = [tf.identity(t) for t in stored[step][0]]
                state_before = [
                    tf.identity(t) for t in tf.nest.flatten(stored[step][1])
                ]
                gated = [tf.identity(t) for t in params]
            cotangent, state_cotangent, gradient = self._step_vjp(
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
        meta_gradient = self._assemble(cotangent, fixed_gradient)
        return meta_gradient, query_loss, self.metric(outputs, query_y), fast

    def _recomputed_task_result_looped(
        self, support_x, support_y, query_x, query_y, task_seed, first_order_steps
    ):
        """``_recomputed_task_result`` with the forward and the reverse pass
        each a ``tf.while_loop``; step ``s``'s parameters and inner optimizer
        state are kept in ``TensorArray``s for the reverse pass. Every step,
        the last too, is recomputed, so the graph holds the step twice (once
        in each loop) whatever the number of steps; keeping the last step's
        activations as the unrolled form does would add a third copy
        (measured at 20-way, 5 steps: 4% less time per step for 3 s more
        compile and 60 MiB more memory)."""
        steps = self.inner_steps
        params = self.parameters()
        task = (support_x, support_y, task_seed, True)
        adapted = [params[i] for i in self._adapted]
        state = self.inner_optimizer.init(adapted)

        def arrays(values):
            return [
                tf.TensorArray(v.dtype, size=steps, element_shape=v.shape)
                for v in values
            ]

        def forward(step, adapted, state, kept, kept_state):
            kept = [a.write(step, t) for a, t in zip(kept, adapted)]
            flat = tf.nest.flatten(state)
            kept_state = [a.write(step, t) for a, t in zip(kept_state, flat)]
            adapted, state = self.inner_step(params, adapted, state, step, task)
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
        fast = self._merge(params, adapted)
        meta_gradient, query_loss, outputs = self._query_gradient(
            fast, support_x, query_x, query_y
        )
        cotangent = [meta_gradient[i] for i in self._adapted]
        state_cotangent = [tf.zeros_like(t) for t in tf.nest.flatten(state)]
        fixed_gradient = [tf.zeros_like(params[i]) for i in self._fixed]

        def backward(step, cotangent, state_cotangent, fixed_gradient, first_order):
            cotangent, state_cotangent, gradient = self._step_vjp(
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
        fixed_gradient = [
            meta_gradient[i] + g for i, g in zip(self._fixed, fixed_gradient)
        ]
        meta_gradient = self._assemble(cotangent, fixed_gradient)
        return meta_gradient, query_loss, self.metric(outputs, query_y), fast


class FOMAML(MAML):
    """First-order MAML: MAML with ``first_order=True``."""

    name = "fomaml"

    def __init__(self, *args, **kwargs):
        kwargs["first_order"] = True
        super().__init__(*args, **kwargs)
