"""The schema of a metric dialect (``[services.metrics]``, ``[prometheus.metrics]``); resolved and read through
:mod:`acgs_checks.environment.dialect`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from acgs_checks.environment.base import Strict, problem

METRIC_NAME = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
LABEL_NAME = r"^(|[a-zA-Z_][a-zA-Z0-9_]*)$"
MetricName = Annotated[str | None, Field(pattern=METRIC_NAME)]
OptionalMetric = Annotated[str | None, Field(pattern=r"^(|[a-zA-Z_:][a-zA-Z0-9_:]*)$")]  # "": none
LabelName = Annotated[str | None, Field(pattern=LABEL_NAME)]


class ServiceMetrics(Strict):
    """A service's metric dialect: what its request metrics are called (unset: [prometheus.metrics], then the
    defaults in :mod:`acgs_checks.environment.dialect`). ``acgs-checks init`` writes it from what Prometheus holds."""

    histogram: OptionalMetric = Field(None, description="the request-duration histogram, without _bucket "
                                      "(the name before _bucket); \"\": the service has none")
    counter: OptionalMetric = Field(None, description="the request counter (e.g. <prefix>_requests_total), or "
                                "\"histogram_count\": the histogram's _count")
    status_label: LabelName = Field(None, description="the label holding the HTTP status (status, code, "
                                    "status_code, ...); \"\": the metrics carry none (no error rate can be read)")
    in_flight: OptionalMetric = Field(None, description="a gauge of requests being served (evidence "
                                              "beside the request rate); \"\": none")
    buckets: tuple[float, ...] | None = Field(None, description="the histogram's finite bucket bounds, in seconds "
                                              "(init learns them): the Apdex alert rule needs T and 4T among them")
    service_down: Literal["probe_success", "up"] | None = Field(
        None, description="what the generated AcgsServiceDown reads: blackbox_exporter's probe_success of the "
        "health URL, or Prometheus's own up of the service's selector")

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class PrometheusMetrics(ServiceMetrics):
    """[prometheus.metrics]: the services' dialect defaults, and the business metrics' names."""

    compliance_score: MetricName = Field(None, description="the constitutional compliance score gauge")
    policy_evaluations: MetricName = Field(None, description="a policy evaluation counter with a result label")
    policy_result_label: LabelName = Field(None, description="with policy_evaluations: the label saying success")
    policy_success_value: str | None = Field(None, description="with policy_evaluations: the value of a success")
    policy_successful: MetricName = Field(None, description="or a counter of successful evaluations ...")
    policy_failed: MetricName = Field(None, description="... with a counter of failed ones")

    @model_validator(mode="after")
    def _pair(self) -> PrometheusMetrics:
        if bool(self.policy_successful) != bool(self.policy_failed):
            raise problem("policy_successful and policy_failed go together",
                          "set both counters, or policy_evaluations with its result label", at="policy_successful")
        return self
