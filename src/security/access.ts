import { ODataError } from "../odata/errors.js";
import { isGuid } from "../metadata/guid.js";
import type { EntityModel, Model, NavigationModel } from "../metadata/model.js";
import type { WriteContext } from "../providers/data-provider.js";

/** Dataverse privilege rights on an entity. */
export type Right = "Create" | "Read" | "Write" | "Delete" | "Append" | "AppendTo";
export const RIGHTS: readonly Right[] = ["Create", "Read", "Write", "Delete", "Append", "AppendTo"];

/** The privilege name Dataverse uses: prvCreateaccount, prvReadmshr_hcmworkerentity... */
export function privilegeName(right: Right, entityLogicalName: string): string {
  return `prv${right}${entityLogicalName}`;
}

export const METADATA_PRIVILEGES = {
  entity: "prvReadEntity",
  attribute: "prvReadAttribute",
  relationship: "prvReadRelationship",
  optionSet: "prvReadOptionSet",
} as const;

/** Who is calling: resolved by authentication before anything else runs. */
export interface Caller {
  userId: string;
  /** The application (client) id for application users. */
  applicationId?: string;
  fullName?: string;
  /** Set when the request is made on behalf of another user (MSCRMCallerID / CallerObjectId). */
  impersonatedBy?: string;
}

export interface RequestCredentials {
  method: string;
  headers: Record<string, string | string[] | undefined>;
}

/**
 * The security layer as the OData layer sees it: who the caller is, and whether the caller holds a
 * privilege. Every request is checked here before it reaches a provider.
 */
export interface SecurityPolicy {
  /** Resolves the caller, or throws a 401/403 ODataError. */
  authenticate(request: RequestCredentials): Promise<Caller>;
  /** Throws a 403 ODataError naming the first missing privilege and the caller. */
  require(caller: Caller, privileges: readonly string[], model: Model): Promise<void>;
  /** Who a write to the entity is recorded as; may refuse it (an application without a user mapping). */
  writeContext?(caller: Caller, entity: EntityModel): Promise<WriteContext>;
  /** Extra checks on a many-to-many link (assigning a role must not grant more than the caller holds). */
  checkLink?(caller: Caller, navigation: NavigationModel, sourceId: string, targetId: string, associate: boolean): Promise<void>;
}

/**
 * Who a write by `caller` is recorded as: the policy's answer (an application's mapped user), and under
 * impersonation the user who really wrote it as the delegate (createdonbehalfby/modifiedonbehalfby).
 */
export async function writeContextOf(policy: SecurityPolicy | undefined, caller: Caller, entity: EntityModel): Promise<WriteContext> {
  const context = policy?.writeContext ? await policy.writeContext(caller, entity) : { userId: caller.userId };
  return caller.impersonatedBy ? { ...context, delegateId: caller.impersonatedBy } : context;
}

/** The identity used when security is switched off (embedded tests, trusted single-user tools). */
export const SYSTEM_CALLER: Caller = { userId: "00000000-0000-0000-0000-000000000001", fullName: "SYSTEM" };

/** Allows everything: only for embedding behind a gateway that already authorizes. Never the default of the server. */
export class OpenSecurityPolicy implements SecurityPolicy {
  /** Impersonation headers are honoured (there is no one to refuse), after checking they are GUIDs. */
  async authenticate(request: RequestCredentials): Promise<Caller> {
    const raw = request.headers["mscrmcallerid"] ?? request.headers["callerobjectid"];
    const target = Array.isArray(raw) ? raw[0] : raw;
    if (target === undefined) return SYSTEM_CALLER;
    if (!isGuid(target.trim())) {
      throw new ODataError(400, "0x80060888", `MSCRMCallerID/CallerObjectId must be a GUID, not '${target}'`);
    }
    return { userId: target.trim().toLowerCase(), impersonatedBy: SYSTEM_CALLER.userId };
  }
  async require(): Promise<void> {}
}
