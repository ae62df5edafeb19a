"""All tables, one module each, so Alembic sees everything and domains don't import each other."""

from darkroom.models.base import Base
from darkroom.models.credit_transaction import CreditTransaction
from darkroom.models.provider_callback import ProviderCallback
from darkroom.models.task import ACTIVE_STATUSES, FINAL_STATUSES, Task, TaskStatus
from darkroom.models.task_attempt import TaskAttempt
from darkroom.models.task_event import TaskEvent
from darkroom.models.task_file import TaskFile
from darkroom.models.upload import Upload
from darkroom.models.user import User
from darkroom.models.user_credits import UserCredits

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "Base",
    "CreditTransaction",
    "ProviderCallback",
    "Task",
    "TaskAttempt",
    "TaskEvent",
    "TaskFile",
    "TaskStatus",
    "Upload",
    "User",
    "UserCredits",
]
