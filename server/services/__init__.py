"""The gRPC servicers, and the catalogue of the public services they implement."""

from learning.v1 import (
    adapter_pb2,
    dataset_pb2,
    drift_pb2,
    evaluation_pb2,
    feedback_pb2,
    fisher_pb2,
    lora_control_pb2,
    online_pb2,
    pipeline_pb2,
    preparation_pb2,
    training_pb2,
)

SERVICE_DESCRIPTORS = tuple(
    module.DESCRIPTOR.services_by_name[name]
    for module, name in (
        (training_pb2, "TrainingService"),
        (fisher_pb2, "FisherService"),
        (adapter_pb2, "AdapterService"),
        (lora_control_pb2, "LoraControlService"),
        (evaluation_pb2, "EvaluationService"),
        (feedback_pb2, "FeedbackService"),
        (dataset_pb2, "DatasetService"),
        (pipeline_pb2, "PipelineService"),
        (drift_pb2, "DriftService"),
        (online_pb2, "OnlineLearningService"),
        (preparation_pb2, "DataPreparationService"),
    )
)
SERVICE_NAMES = tuple(d.full_name for d in SERVICE_DESCRIPTORS)
