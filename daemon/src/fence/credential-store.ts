// BMC credentials at rest: AES-256-GCM with a key kept in the state directory (a 32-byte file,
// mode 0600, made on first use). Each sealed value is bound to its record id (additional
// authenticated data), so a sealed blob copied into another record does not open there.
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { mkdir, open, readFile } from "node:fs/promises";
import { dirname } from "node:path";
import { z } from "zod";

export const SealedSchema = z.object({
  alg: z.literal("aes-256-gcm"),
  iv: z.string(),
  tag: z.string(),
  data: z.string(),
});
export type Sealed = z.infer<typeof SealedSchema>;

export interface Credentials {
  username: string;
  password: string;
}

const KEY_BYTES = 32;

export class CredentialStore {
  private constructor(private readonly key: Buffer) {}

  /** Opens the key file, making it (mode 0600, exclusively) when there is none. */
  static async open(keyFile: string): Promise<CredentialStore> {
    await mkdir(dirname(keyFile), { recursive: true, mode: 0o700 });
    try {
      const fh = await open(keyFile, "wx", 0o600);
      try {
        await fh.writeFile(randomBytes(KEY_BYTES));
        await fh.sync();
      } finally {
        await fh.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const key = await readFile(keyFile);
    if (key.length !== KEY_BYTES) {
      throw new Error(
        `the BMC credential key ${keyFile} holds ${key.length} bytes instead of ${KEY_BYTES}; restore it from a backup (or remove it and register every BMC again).`,
      );
    }
    return new CredentialStore(key);
  }

  seal(credentials: Credentials, boundTo: string): Sealed {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.key, iv);
    cipher.setAAD(Buffer.from(boundTo));
    const data = Buffer.concat([
      cipher.update(JSON.stringify({ u: credentials.username, p: credentials.password }), "utf8"),
      cipher.final(),
    ]);
    return { alg: "aes-256-gcm", iv: iv.toString("base64"), tag: cipher.getAuthTag().toString("base64"), data: data.toString("base64") };
  }

  /** Throws when the blob was made with another key or for another record. */
  unseal(sealed: Sealed, boundTo: string): Credentials {
    const decipher = createDecipheriv("aes-256-gcm", this.key, Buffer.from(sealed.iv, "base64"));
    decipher.setAAD(Buffer.from(boundTo));
    decipher.setAuthTag(Buffer.from(sealed.tag, "base64"));
    const text = Buffer.concat([decipher.update(Buffer.from(sealed.data, "base64")), decipher.final()]).toString("utf8");
    const parsed = z.object({ u: z.string(), p: z.string() }).parse(JSON.parse(text));
    return { username: parsed.u, password: parsed.p };
  }
}
