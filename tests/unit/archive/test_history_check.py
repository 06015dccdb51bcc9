"""The `aps history sql` checker on EXPLAIN AST output (as chdb prints it), without chdb."""

from __future__ import annotations

import pytest

from streams.archive.history import QueryRefusedError, check_archive_query

JOIN_WITH_SUBQUERY = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 3)
   ExpressionList (children 1)
    Identifier c.command_id
   TablesInSelectQuery (children 2)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      TableIdentifier commands (alias c)
    TablesInSelectQueryElement (children 2)
     TableExpression (children 1)
      Subquery (alias r) (children 1)
       SelectWithUnionQuery (children 1)
        ExpressionList (children 1)
         SelectQuery (children 2)
          ExpressionList (children 1)
           Asterisk
          TablesInSelectQuery (children 1)
           TablesInSelectQueryElement (children 1)
            TableExpression (children 1)
             TableIdentifier {table}
     TableJoin (children 1)
      ExpressionList (children 1)
       Identifier command_id
   Function in (children 1)
    ExpressionList (children 2)
     Identifier topic
     Identifier {in_table}
"""


def check(ast: str, database: str = "aps") -> None:
    def parse(query: str, params: object = None) -> list[str]:
        return [] if query.startswith("SELECT formatQuery") else [x for x in ast.splitlines() if x]
    check_archive_query("(the query)", database, parse)


def test_queries_over_the_archive_pass() -> None:
    check(JOIN_WITH_SUBQUERY.format(table="execution_reports", in_table="commands"))
    check(JOIN_WITH_SUBQUERY.format(table="aps.execution_reports", in_table="aps.commands"))


@pytest.mark.parametrize(("table", "in_table", "reason"), [
    ("system.tables", "commands", "outside the archive"),
    ("other.commands", "commands", "outside the archive"),
    ("execution_reports", "system.one", "outside the archive"),
])
def test_tables_elsewhere_are_refused(table: str, in_table: str, reason: str) -> None:
    with pytest.raises(QueryRefusedError, match=reason):
        check(JOIN_WITH_SUBQUERY.format(table=table, in_table=in_table))


def test_table_functions_and_outside_readers_are_refused() -> None:
    table_function = JOIN_WITH_SUBQUERY.format(table="x", in_table="commands").replace(
        "TableIdentifier x", "Function file (children 1)")
    with pytest.raises(QueryRefusedError, match=r"table functions are not allowed: file\(\)"):
        check(table_function)
    reader = JOIN_WITH_SUBQUERY.format(table="commands", in_table="commands").replace(
        "Identifier c.command_id", "Function dictGetString (children 1)")
    with pytest.raises(QueryRefusedError, match="reads outside the archive"):
        check(reader)


def test_only_one_plain_select_is_allowed() -> None:
    with pytest.raises(QueryRefusedError, match="only SELECT"):
        check("DropQuery  commands (children 1)\n Identifier commands\n")
    outfile = ("SelectWithUnionQuery (children 2)\n ExpressionList (children 1)\n"
               "  SelectQuery (children 1)\n   ExpressionList (children 1)\n"
               "    Literal UInt64_1\n Literal '/tmp/x'\n")
    with pytest.raises(QueryRefusedError, match="INTO OUTFILE"):
        check(outfile)
    with pytest.raises(QueryRefusedError, match="only one query"):
        check(outfile.replace(" Literal '/tmp/x'", "").replace("(children 2)", "(children 1)")
              + "SelectWithUnionQuery (children 1)\n")
