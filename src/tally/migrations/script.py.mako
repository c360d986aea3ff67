"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Branch: expand (additive: safe under the code before and after it) or contract (removes what no
code running any more uses); see ADR 0031 and docs/operations.md "Schema changes".
"""

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
