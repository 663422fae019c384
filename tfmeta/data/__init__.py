"""Data for meta-learning: task sets (``task_sets``: a config's train, validation
and test streams), class images, Omniglot, image folders, episodes,
sinusoids, embeddings (LEO format)."""

from tfmeta.data.alphabet_split import alphabets_of, check_tasks_within_alphabet
from tfmeta.data.class_images import ClassImages
from tfmeta.data.embeddings import (
    RestrictedUnpickler,
    load_embedding_file,
    load_embedding_splits,
    name_embedding_classes,
    write_embedding_file,
)
from tfmeta.data.episodes import (
    Episode,
    check_episode_spec,
    episode_dataset,
    task_groups,
)
from tfmeta.data.folder import load_image_folder
from tfmeta.data.noise import shuffle_task_labels
from tfmeta.data.omniglot import (
    ARCHIVES,
    OmniglotCharacter,
    load_omniglot_folder,
    preprocess_omniglot_image,
)
from tfmeta.data.omniglot_split import PROTOCOLS, describe_split, split_omniglot
from tfmeta.data.omniglot_tfds import load_omniglot_tfds
from tfmeta.data.sinusoid import (
    sinusoid_dataset,
    sinusoid_function,
    sinusoid_task_parameters,
)
from tfmeta.data.tasks import TaskSets, task_sets

__all__ = [
    "ARCHIVES",
    "PROTOCOLS",
    "ClassImages",
    "Episode",
    "OmniglotCharacter",
    "RestrictedUnpickler",
    "TaskSets",
    "alphabets_of",
    "check_episode_spec",
    "check_tasks_within_alphabet",
    "describe_split",
    "episode_dataset",
    "load_embedding_file",
    "load_embedding_splits",
    "load_image_folder",
    "load_omniglot_folder",
    "load_omniglot_tfds",
    "name_embedding_classes",
    "preprocess_omniglot_image",
    "shuffle_task_labels",
    "sinusoid_dataset",
    "sinusoid_function",
    "sinusoid_task_parameters",
    "split_omniglot",
    "task_groups",
    "task_sets",
    "write_embedding_file",
]
