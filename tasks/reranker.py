"""The sticker row's reranker, trained on the devices (``--task reranker``)."""

from federated import FederatedTask, TaskContext, register_task
from reranker import make_task

__all__ = ["reranker_task"]


@register_task("reranker")
def reranker_task(context: TaskContext) -> FederatedTask:
    """The sticker row's task (:func:`reranker.make_task`; its options are those of
    :func:`reranker.make_row_task`)."""
    task: FederatedTask = make_task(context)
    return task
