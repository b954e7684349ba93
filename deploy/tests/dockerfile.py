"""Parse a Dockerfile with dockerfile-parse and print its instructions by stage as
JSON, for tests/tests/deploy.rs to check: [{"from": ..., "as": ..., "instructions":
[{"instruction", "value", "line"}]}]. Parsing only: no image is built."""

import json
import sys

from dockerfile_parse import DockerfileParser

parser = DockerfileParser(path=sys.argv[1])
stages = []
for i in parser.structure:
    if i["instruction"] == "FROM":
        words = i["value"].split()
        alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
        stages.append({"from": words[0], "as": alias, "instructions": []})
    elif stages:
        stages[-1]["instructions"].append(
            {"instruction": i["instruction"], "value": i["value"], "line": i["startline"] + 1}
        )
print(json.dumps({"stages": stages, "parent_images": parser.parent_images}, indent=1))
