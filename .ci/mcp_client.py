"""Drives `crafting-table mcp` with the official MCP Python SDK (mcp>=2,<3).

Usage: mcp_client.py BINARY BASE_URL ADMIN_TOKEN TEAM_TOKEN
Exits non-zero with a message when anything is not as documented.
"""
import asyncio
import os
import sys
import tempfile

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

BINARY, BASE, ADMIN, TEAM = sys.argv[1:5]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


async def session_for(token, errlog):
    params = StdioServerParameters(
        command=BINARY,
        args=["mcp"],
        env={
            "CRAFTING_TABLE_BASE_URL": BASE,
            "CRAFTING_TABLE_TOKEN": token,
            "RUST_LOG": "debug",
            "PATH": os.environ.get("PATH", ""),
        },
    )
    return stdio_client(params, errlog=errlog)


async def main():
    with tempfile.TemporaryFile(mode="w+") as errlog:
        async with await session_for(ADMIN, errlog) as (read, write):
            async with ClientSession(read, write) as s:
                init = await s.initialize()
                check(init.server_info.name == "crafting-table", f"server name {init.server_info}")
                tools = {t.name: t for t in (await s.list_tools()).tools}
                for name in ["list_projects", "get_project", "register_project", "run_job", "get_job",
                             "get_job_log", "list_jobs", "get_findings", "cancel_job", "trigger_patch",
                             "list_patches", "get_patch", "registry_status", "reconcile_registry"]:
                    check(name in tools, f"tool {name} listed")
                run = tools["run_job"]
                check(set(run.input_schema.get("required", [])) == {"project", "recipe"},
                      f"run_job schema {run.input_schema}")
                check(run.annotations is not None and run.annotations.read_only_hint is False,
                      "run_job is not read-only")
                check(tools["get_job"].annotations.read_only_hint is True, "get_job is read-only")

                r = await s.call_tool("list_projects", {})
                check(not r.is_error, f"list_projects: {r.content}")
                names = [p["name"] for p in r.structured_content["projects"]]
                check(names == ["app"], f"projects {names}")

                r = await s.call_tool("run_job", {"project": "app", "recipe": "test", "wait_secs": 120})
                check(not r.is_error, f"run_job: {r.content}")
                job = r.structured_content
                check(job["status"] == "succeeded" and job["exit_code"] == 0, f"run_job result {job}")
                check("all good" in job["log_tail"], f"log tail {job['log_tail']!r}")

                r = await s.call_tool("run_job", {"project": "app", "recipe": "lint", "wait_secs": 120})
                lint = r.structured_content
                check(lint["status"] == "failed" and lint["exit_code"] == 2, f"lint {lint}")
                r = await s.call_tool("get_findings", {"job_id": lint["job_id"]})
                f = r.structured_content["findings"]
                check(len(f) == 1 and f[0]["code"] == "TS2322" and f[0]["file"] == "src/a.ts", f"findings {f}")

                r = await s.call_tool("run_job", {"project": "app"})
                check(r.is_error and "recipe" in r.content[0].text, f"bad arguments: {r.content}")
                admin_job = lint["job_id"]

        async with await session_for(TEAM, errlog) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                r = await s.call_tool("get_job", {"job_id": admin_job})
                check(r.is_error and "not_found" in r.content[0].text, f"cross-token get_job: {r.content}")

        errlog.seek(0)
        logged = errlog.read()
        check(ADMIN not in logged and TEAM not in logged, "a bearer appeared in the server's log")
    print("python MCP SDK: initialize, tools, list_projects, run_job, get_findings, errors: ok")


asyncio.run(main())
