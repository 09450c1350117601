import type { Principal, RequestAccess } from './access.service.js';
import type { RequestAudit } from './request-audit.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * What the route needs: `<area>.<verb>` (mapped to roles in
     * access/permissions.ts), `public` or `authenticated`. Every route must
     * say: the manager refuses to start otherwise.
     */
    permission?: string;
  }
  interface FastifyRequest {
    /** The signed-in caller (absent on public routes). */
    principal?: Principal;
    /** The grants that allowed this request's route permission. */
    access?: RequestAccess;
    /** Set when the request was refused for lack of access (also answered as a 404): recorded as a denial. */
    auditDenial?: string;
    /** Who the audit log names when no one is signed in (the user name of a failed sign-in). */
    auditActor?: string;
    /** The audit record an operation this request submits commits with (access/request-audit.ts). */
    requestAudit?: RequestAudit;
    /** The store's change token, read once when a bearer token was checked (`Store.changeToken`; undefined on PostgreSQL). */
    changeToken?: { value: string | undefined };
  }
}
