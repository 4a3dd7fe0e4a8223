"""Typed models, one module per aggregate."""
from pilot.db import Base
from pilot.models.analyses import AnalysisRun, JobRun
from pilot.models.assignments import Assignment, LayerMembership
from pilot.models.audit import AuditEvent
from pilot.models.customers import Customer, CustomerGroup
from pilot.models.events import CustomerEvent, MetricDefinitionVersion
from pilot.models.governance import AnalysisPlan, Approval, Webhook, WebhookDelivery
from pilot.models.pilots import Enrolment, Pilot, Stage
from pilot.models.programmes import Programme, Variant
from pilot.models.sessions import WebSession
from pilot.models.stores import Region, Store
from pilot.models.tokens import ApiToken
from pilot.models.transactions import IngestionBatch, Transaction
from pilot.models.users import PasswordReset, SignInAttempt, User

__all__ = [
    "AnalysisRun", "JobRun", "ApiToken", "Assignment", "LayerMembership", "AuditEvent", "Base", "Customer",
    "CustomerGroup", "Enrolment", "Pilot", "Programme", "IngestionBatch", "Region", "Stage", "Store", "Transaction",
    "Variant", "WebSession", "AnalysisPlan", "Approval", "Webhook", "WebhookDelivery", "PasswordReset",
    "SignInAttempt", "User", "CustomerEvent", "MetricDefinitionVersion"
]
