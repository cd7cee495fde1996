// Which addresses and URLs a tenant's image import may reach: every range that leads back into the
// host or its private networks is refused, in each of its spellings.
import assert from "node:assert/strict";
import { networkInterfaces } from "node:os";
import { describe, it } from "node:test";
import { checkUrl, notPublic, UrlRefusedError } from "./url-guard.js";

describe("url guard", () => {
  it("refuses loopback, private, link-local, CGNAT, unique-local, multicast, unspecified and their IPv4-mapped forms", () => {
    const refused = [
      "127.0.0.1",
      "127.8.9.10",
      "0.0.0.0",
      "10.1.2.3",
      "172.16.0.1",
      "172.31.255.254",
      "192.168.1.1",
      "100.64.0.1",
      "169.254.169.254",
      "224.0.0.1",
      "255.255.255.255",
      "::1",
      "::",
      "fe80::1",
      "fc00::1",
      "fd12:3456::1",
      "ff02::1",
      "::ffff:127.0.0.1",
      "::ffff:10.0.0.1",
      "::ffff:169.254.169.254",
      "::127.0.0.1",
      "64:ff9b::7f00:1",
      "2002:7f00:1::1",
    ];
    for (const address of refused) assert.ok(notPublic(address) !== undefined, `${address} is refused`);
    for (const address of ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
      assert.equal(notPublic(address), undefined, `${address} is public`);
  });

  it("refuses this host's own addresses even when they are public", () => {
    for (const list of Object.values(networkInterfaces()))
      for (const own of list ?? []) assert.ok(notPublic(own.address) !== undefined, own.address);
  });

  it("holds a URL to a prefix's scheme, host, port and path boundary", () => {
    const rules = { prefixes: ["https://images.example.org/pub"], publicOnly: true };
    checkUrl(new URL("https://images.example.org/pub/debian.raw"), rules);
    checkUrl(new URL("https://images.example.org/pub"), rules);
    for (const url of [
      "http://images.example.org/pub/x",
      "https://images.example.org:8443/pub/x",
      "https://images.example.org/public/x",
      "https://images.example.org.evil.net/pub/x",
      "https://images.example.org/pub/../secret",
      "https://u:p@images.example.org/pub/x",
      "https://127.0.0.1/pub/x",
    ]) {
      assert.throws(() => checkUrl(new URL(url), rules), UrlRefusedError, url);
    }
    assert.throws(() => checkUrl(new URL("https://images.example.org/pub/x"), { prefixes: [], publicOnly: true }), /allows tenants no URL/);
    assert.throws(() => checkUrl(new URL("http://[::ffff:7f00:1]/x"), { prefixes: undefined, publicOnly: true }), /loopback/);
  });
});
