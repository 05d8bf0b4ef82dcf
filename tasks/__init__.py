"""On-device tasks the federated platform trains: one module each.

A task is one module here (plus its test): a factory ``(federated.TaskContext) ->
federated.FederatedTask`` decorated ``@federated.register_task("name")``. Nothing else
names it: the platform imports every module of this package the first time a task is
looked up (:data:`federated.TASK_PACKAGE`), so ``stickers federated train --task name``,
``stickers federated sweep``, ``stickers federated tasks``, ``stickers device
start-model --task name`` and ``stickers device run --task name`` find it. Tasks of
other installed distributions register under the entry-point group
``sticker_suggest.federated_tasks`` instead.
"""
