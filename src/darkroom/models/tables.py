"""The tables behind the models, for Core statements on hot write paths.

``insert(tasks).values(...)`` / ``update(tasks).where(...).returning(...)`` run as plain SQL
statements: no unit-of-work flush, no identity map, no ORM instances to build. Column defaults
(ids, ``created_at``) and ``onupdate`` (``updated_at``) apply as they do through the ORM.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from darkroom.models.credit_transaction import CreditTransaction
from darkroom.models.task import Task
from darkroom.models.task_attempt import TaskAttempt
from darkroom.models.task_event import TaskEvent
from darkroom.models.task_file import TaskFile
from darkroom.models.user_credits import UserCredits

tasks = cast(Table, Task.__table__)
task_attempts = cast(Table, TaskAttempt.__table__)
task_events = cast(Table, TaskEvent.__table__)
task_files = cast(Table, TaskFile.__table__)
credit_transactions = cast(Table, CreditTransaction.__table__)
user_credits = cast(Table, UserCredits.__table__)
