// The hostile registry double misbehaves as its modes say, checked with plain
// HTTP (not the client it is meant to test).
import { afterEach, describe, expect, it } from "vitest";
import { startHostileRegistry, type HostileRegistry } from "../harness/hostile-registry.js";

const running: HostileRegistry[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop()));
});

async function start(options: Parameters<typeof startHostileRegistry>[0]): Promise<HostileRegistry> {
  const registry = await startHostileRegistry(options);
  running.push(registry);
  return registry;
}

describe("hostile registry double", () => {
  it("endless tag pages each link a new next page; looping ones link back to the first", async () => {
    const endless = await start({ tags: "endless" });
    const links: string[] = [];
    let url = `${endless.url}/v2/r/tags/list?n=1000`;
    for (let i = 0; i < 3; i++) {
      const res = await fetch(url);
      const next = /<([^>]+)>/.exec(res.headers.get("link") ?? "")?.[1];
      expect(next, `page ${i} has a next link`).toBeDefined();
      links.push(next!);
      url = endless.url + next!;
    }
    expect(new Set(links).size, `links: ${links.join(" ")}`).toBe(3);
    const loop = await start({ tags: "loop" });
    const res = await fetch(`${loop.url}/v2/r/tags/list?n=1000`);
    expect(res.headers.get("link")).toBe('</v2/r/tags/list?n=1000>; rel="next"');
  });

  it("basicAuth challenges first and records the credentials sent after", async () => {
    const registry = await start({ basicAuth: true });
    expect((await fetch(`${registry.url}/v2/`)).status).toBe(401);
    expect((await fetch(`${registry.url}/v2/`, { headers: { authorization: "Basic eDp5" } })).status).toBe(200);
    expect(registry.authorizations).toEqual(["Basic eDp5"]);
  });
});
