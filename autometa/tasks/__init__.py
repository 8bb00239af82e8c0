"""Task distributions: each yields meta-batches of tasks as stacked tensors."""

from autometa.tasks._attributes import (
    SEVEN_SEGMENT,
    ClassAttributeTasks,
    seven_segment_mnist,
    seven_segment_vectors,
)
from autometa.tasks._base import TaskBatch, TaskDistribution
from autometa.tasks._classification import FewShotClassification, omniglot_splits, split_classes
from autometa.tasks._factory import SPLITS, check_tasks_spec, make_tasks, split_rotations
from autometa.tasks._l2o import MLPFamily, QuadraticFamily, check_stream, fresh_init, quadratic_loss, stream_loss
from autometa.tasks._regression import RandomQuadratics, Sinusoid
from autometa.tasks._sequence import SequenceClassification, presentation_index
from autometa.tasks._supervised import SupervisedClassification, split_examples, supervised_tasks

__all__ = [
    "SEVEN_SEGMENT", "ClassAttributeTasks", "seven_segment_mnist", "seven_segment_vectors",
    "TaskBatch", "TaskDistribution", "FewShotClassification", "omniglot_splits", "split_classes",
    "SPLITS", "check_tasks_spec", "make_tasks", "split_rotations", "RandomQuadratics", "Sinusoid", "MLPFamily",
    "QuadraticFamily", "check_stream", "fresh_init", "quadratic_loss", "stream_loss", "SupervisedClassification",
    "split_examples", "supervised_tasks", "SequenceClassification", "presentation_index",
]
