"""One flag per config key, defined from the keys; a paper's variant as a
config argument; library errors named as flags."""

from __future__ import annotations

import pytest
from absl import flags

from experiments import flags as binary_flags
from tfmeta.algorithms import ALGORITHMS
from tfmeta.configs import BASE, build_learner, get_config, keys


def test_every_config_key_is_a_flag_typed_by_its_default():
    names = set(BASE) | {k for a in ALGORITHMS.values() for k in a.defaults}
    expected = names - set(keys.INTERNAL)
    assert set(binary_flags._CONFIG_FLAGS) == expected
    assert flags.FLAGS["n_way"].flag_type() == "int"
    assert flags.FLAGS["inner_lr"].flag_type() == "float"
    assert flags.FLAGS["recompute"].flag_type() == "bool"
    assert flags.FLAGS["recompute_steps"].flag_type() == "int"  # default None
    assert flags.FLAGS["kl_estimator"].flag_type() == "string"
    assert "list" in flags.FLAGS["hidden"].flag_type()


def test_given_flags_override_the_config_and_others_keep_it():
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", "--inner_lr=0.25", "--hidden=8,4", "--norecompute"])
    try:
        config = binary_flags.resolved_config()
    finally:
        flags.FLAGS.unparse_flags()
    default = get_config("maml", "omniglot")
    assert config["inner_lr"] == 0.25 and config["hidden"] == [8, 4]
    assert config["recompute"] is False
    assert {k: v for k, v in config.items() if k not in ("inner_lr", "hidden")} == {
        k: v for k, v in default.items() if k not in ("inner_lr", "hidden")
    }


def test_a_variant_is_a_config_argument():
    config = get_config("maml", "omniglot", "maml_omniglot:20way")
    assert (config["n_way"], config["inner_lr"], config["inner_steps"]) == (20, 0.1, 5)
    assert (config["eval_inner_steps"], config["meta_batch_size"]) == (5, 16)
    assert get_config("maml", "omniglot", "maml_omniglot:5way") == get_config(
        "maml", "omniglot"
    )
    with pytest.raises(ValueError, match="unknown variant '30way' of config"):
        get_config("maml", "omniglot", "maml_omniglot:30way")


def test_the_alphabet_recipe_builds_its_learner():
    config = get_config("protonet", "omniglot", "protonet_omniglot:alphabet")
    assert (config["split_protocol"], config["n_way"], config["augment"]) == (
        "alphabet",
        20,
        1.0,
    )
    learner = build_learner(config, (28, 28, 1))
    assert (learner.n_way, learner.train_n_way) == (20, 60)
    assert (learner.support_copies, learner.support_augment) == (8, 1.0)
    assert learner.query_copies == 0 and config["num_steps"] == 6000


def test_the_characters_recipe_builds_its_learner():
    config = get_config("protonet", "omniglot", "protonet_omniglot:characters")
    assert (config["split_protocol"], config["n_way"], config["augment"]) == (
        get_config("protonet", "omniglot")["split_protocol"],
        5,
        1.0,
    )
    assert config["num_steps"] == 2000
    learner = build_learner(config, (28, 28, 1))
    assert (learner.n_way, learner.train_n_way) == (5, 60)
    assert (learner.support_copies, learner.query_copies) == (8, 8)


def test_the_pretrained_recipes_build_their_learners():
    from tfmeta.algorithms import UnicornMAML, UnicornReptile

    for variant, first_order, inner_lr, steps, outer in (
        ("pretrained", False, 0.4, (1, 1), "cosine_adam"),
        ("pretrained_first_order", True, 0.01, (5, 10), "annealed_sgd"),
    ):
        config = get_config("unicorn_maml", "omniglot", f"maml_omniglot:{variant}")
        assert (config["pooling"], config["outer_optimizer"]) == ("max", outer)
        learner = build_learner(config, (28, 28, 1))
        assert isinstance(learner, UnicornMAML)
        assert learner.first_order == first_order
        assert learner.inner_optimizer.learning_rate == inner_lr
        assert (learner.inner_steps, learner.eval_inner_steps) == steps
    reptile = get_config("unicorn_reptile", "omniglot", "reptile_omniglot:pretrained")
    assert reptile["pooling"] == "max" and reptile["outer_optimizer"] == "annealed_sgd"
    learner = build_learner(reptile, (28, 28, 1))
    assert isinstance(learner, UnicornReptile)
    assert learner.inner_optimizer.describe()["inner_optimizer"] == "sgd"
    assert (learner.inner_lr, learner.inner_steps, learner.eval_inner_steps) == (
        0.01,
        5,
        10,
    )
    assert (learner.inner_batch_size, learner.eval_inner_batch_size) == (10, None)


def test_library_errors_name_the_flag():
    message = binary_flags.flag_message(ValueError("inner_lr must be > 0, got -1"))
    assert message == "--inner_lr must be > 0, got -1"
    unrelated = ValueError("the support set must hold n_way * k_shot examples")
    assert binary_flags.flag_message(unrelated) == str(unrelated)
    assert binary_flags.flag_message(ValueError("--seed is bad")) == "--seed is bad"
