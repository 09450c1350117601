import { isIP } from 'node:net';
import { Client, InvalidCredentialsError } from 'ldapts';
import { errors } from '@drover/core';
import type { RoleBinding } from '../store/access-types.js';

/** How the manager reaches a directory (the `ldap` key of the manager's configuration). */
export interface LdapSettings {
  /** `ldap://host:port` (optionally with startTls) or `ldaps://host:port`. */
  url: string;
  startTls?: boolean;
  /** PEM of the CA that signed the directory's certificate (LDAPS and StartTLS). */
  caPem?: string;
  /** The service account that searches users and groups. */
  bindDn: string;
  bindPassword: string;
  userBase: string;
  /** `{user}` is replaced by the escaped login name. Default `(uid={user})`. */
  userFilter?: string;
  groupBase: string;
  /** `{dn}` is the user's DN, `{user}` the login name. Default `(member={dn})` (groupOfNames). */
  groupFilter?: string;
  /** Group cn → the roles its members get, each over a scope. */
  groupRoles: Record<string, RoleBinding[]>;
  /** Group membership is re-read at most this often for a signed-in user (default 300 s). */
  refreshSeconds?: number;
  timeoutMs?: number;
}

/** RFC 4515: a value inside a search filter. */
export function escapeFilterValue(value: string): string {
  return value.replace(/[\\*()\0]/g, (c) => `\\${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** What the directory says about a user: their DN, groups and the bindings those groups give. */
export interface DirectoryUser {
  dn: string;
  groups: string[];
  bindings: RoleBinding[];
}

/**
 * A user directory over LDAP (ldapts): binds as the user to check a password,
 * searches with the service account for the user's DN and groups, and maps
 * groups to roles. Every call opens its own connection, with timeouts.
 */
export class LdapDirectory {
  constructor(readonly settings: LdapSettings) {}

  get refreshSeconds(): number {
    return this.settings.refreshSeconds ?? 300;
  }

  private async connect(): Promise<Client> {
    const s = this.settings;
    const tlsOptions = { ...(s.caPem ? { ca: [s.caPem] } : {}), minVersion: 'TLSv1.2' as const };
    // TLS options on the client are for ldaps:// only; given for ldap:// too they break the StartTLS upgrade.
    const ldaps = s.url.startsWith('ldaps://');
    const client = new Client({ url: s.url, timeout: s.timeoutMs ?? 5000, connectTimeout: s.timeoutMs ?? 5000, ...(ldaps ? { tlsOptions } : {}) });
    if (s.startTls) {
      // The upgrade checks the certificate against this host (ldapts would use "localhost" otherwise).
      const host = new URL(s.url).hostname;
      await client.startTLS({ ...tlsOptions, host, ...(isIP(host) ? {} : { servername: host }) });
    }
    return client;
  }

  private async withService<T>(fn: (client: Client) => Promise<T>): Promise<T> {
    const client = await this.connect();
    try {
      await client.bind(this.settings.bindDn, this.settings.bindPassword);
      return await fn(client);
    } catch (error) {
      if (error instanceof InvalidCredentialsError) throw errors.unavailable('The LDAP service account was refused by the directory', { url: this.settings.url });
      throw error;
    } finally {
      await client.unbind().catch(() => undefined);
    }
  }

  /** The user's DN and groups, or undefined when the directory has no such user. */
  async lookup(user: string): Promise<DirectoryUser | undefined> {
    return this.withService(async (client) => {
      const filter = (this.settings.userFilter ?? '(uid={user})').replaceAll('{user}', escapeFilterValue(user));
      const { searchEntries } = await client.search(this.settings.userBase, { scope: 'sub', filter, attributes: ['dn'], sizeLimit: 2 });
      if (searchEntries.length !== 1) return undefined;
      const dn = searchEntries[0]!.dn;
      const groupFilter = (this.settings.groupFilter ?? '(member={dn})').replaceAll('{dn}', escapeFilterValue(dn)).replaceAll('{user}', escapeFilterValue(user));
      const groups = await client.search(this.settings.groupBase, { scope: 'sub', filter: groupFilter, attributes: ['cn'] });
      const names = groups.searchEntries.flatMap((entry) => (Array.isArray(entry['cn']) ? entry['cn'] : [entry['cn']])).map(String);
      return { dn, groups: names, bindings: names.flatMap((name) => this.settings.groupRoles[name] ?? []) };
    });
  }

  /** Checks the password by binding as the user; the directory user on success, undefined for a wrong user or password. */
  async authenticate(user: string, password: string): Promise<DirectoryUser | undefined> {
    // An empty password would be an anonymous bind, which "succeeds".
    if (password.length === 0) return undefined;
    const found = await this.lookup(user);
    if (!found) return undefined;
    const client = await this.connect();
    try {
      await client.bind(found.dn, password);
      return found;
    } catch (error) {
      if (error instanceof InvalidCredentialsError) return undefined;
      throw errors.unavailable(`The LDAP directory at ${this.settings.url} failed: ${(error as Error).message}`);
    } finally {
      await client.unbind().catch(() => undefined);
    }
  }
}
