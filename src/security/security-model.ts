import { stableId } from "../metadata/guid.js";
import type { EntityDefinition, ManyToManyRelationshipDefinition } from "../metadata/types.js";
import type { TableSpec } from "../store/table-spec.js";

/**
 * The Dataverse security model as entities of the service: users (and application users), roles,
 * privileges, the user-role association, and Human Resources' mapping of applications to users.
 */
export const SYSTEMUSER = "systemuser";
export const ROLE = "role";
export const PRIVILEGE = "privilege";
export const AAD_APPLICATION = "mshr_aadapplication";
export const USER_ROLES = "systemuserroles_association";

export { stableId };

export const SYSTEM_ADMINISTRATOR_ROLE_ID = stableId("role", "System Administrator");
export const SYSTEM_ADMINISTRATOR_ROLE = "System Administrator";
export const ORGANIZATION_ID = stableId("organization", "default");
export const BUSINESS_UNIT_ID = stableId("businessunit", "default");

export const SECURITY_ENTITIES: EntityDefinition[] = [
  {
    LogicalName: SYSTEMUSER,
    DisplayName: "User",
    DisplayCollectionName: "Users",
    PrimaryNameAttribute: "fullname",
    OwnershipType: "OrganizationOwned",
    Attributes: [
      { LogicalName: "fullname", AttributeType: "String", MaxLength: 200, RequiredLevel: "ApplicationRequired", DisplayName: "Full Name" },
      // The identity a token resolves to: set when the user is created, never moved afterwards, or Write on
      // users would let a caller take over another user's (an administrator's) identity and roles.
      { LogicalName: "applicationid", AttributeType: "Uniqueidentifier", DisplayName: "Application ID", IsUnique: true, IsValidForUpdate: false },
      { LogicalName: "azureactivedirectoryobjectid", AttributeType: "Uniqueidentifier", DisplayName: "Microsoft Entra Object ID", IsUnique: true, IsValidForUpdate: false },
      { LogicalName: "domainname", AttributeType: "String", MaxLength: 320, DisplayName: "User Name", IsIndexed: true },
      { LogicalName: "internalemailaddress", AttributeType: "String", MaxLength: 320, Format: "Email", DisplayName: "Primary Email" },
      { LogicalName: "isdisabled", AttributeType: "Boolean", DefaultValue: false, DisplayName: "Disabled" },
    ],
  },
  {
    LogicalName: ROLE,
    DisplayName: "Security Role",
    DisplayCollectionName: "Security Roles",
    PrimaryNameAttribute: "name",
    OwnershipType: "OrganizationOwned",
    Attributes: [
      { LogicalName: "name", AttributeType: "String", MaxLength: 100, RequiredLevel: "ApplicationRequired", DisplayName: "Name", IsUnique: true },
      { LogicalName: "description", AttributeType: "Memo", MaxLength: 2000, DisplayName: "Description" },
    ],
  },
  {
    LogicalName: PRIVILEGE,
    DisplayName: "Privilege",
    DisplayCollectionName: "Privileges",
    PrimaryNameAttribute: "name",
    OwnershipType: "OrganizationOwned",
    Attributes: [
      { LogicalName: "name", AttributeType: "String", MaxLength: 200, IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Name", IsUnique: true },
      { LogicalName: "accessright", AttributeType: "String", MaxLength: 20, IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Access Right" },
      { LogicalName: "entitylogicalname", AttributeType: "String", MaxLength: 100, IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Entity" },
      { LogicalName: "canbeglobal", AttributeType: "Boolean", IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Can Be Global" },
      { LogicalName: "canbebasic", AttributeType: "Boolean", IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Can Be Basic" },
    ],
  },
  {
    LogicalName: AAD_APPLICATION,
    DisplayName: "Microsoft Entra ID application",
    DisplayCollectionName: "Microsoft Entra ID applications",
    Description: "Human Resources' Azure Active Directory applications page: the user that writes personnel data for an application (client) id.",
    PrimaryNameAttribute: "mshr_name",
    OwnershipType: "OrganizationOwned",
    Attributes: [
      { LogicalName: "mshr_clientid", AttributeType: "Uniqueidentifier", RequiredLevel: "ApplicationRequired", DisplayName: "Client Id", IsUnique: true },
      { LogicalName: "mshr_name", AttributeType: "String", MaxLength: 200, RequiredLevel: "ApplicationRequired", DisplayName: "Name" },
      { LogicalName: "mshr_userid", AttributeType: "Lookup", Targets: [SYSTEMUSER], DisplayName: "User ID" },
    ],
  },
];

export const SECURITY_RELATIONSHIPS = [
  {
    SchemaName: USER_ROLES,
    RelationshipType: "ManyToManyRelationship",
    Entity1LogicalName: SYSTEMUSER,
    Entity2LogicalName: ROLE,
    IntersectEntityName: "systemuserroles",
    Entity1IntersectAttribute: "systemuserid",
    Entity2IntersectAttribute: "roleid",
    Entity1NavigationPropertyName: USER_ROLES,
    Entity2NavigationPropertyName: USER_ROLES,
  } satisfies ManyToManyRelationshipDefinition,
  {
    SchemaName: "mshr_aadapplication_userid",
    RelationshipType: "OneToManyRelationship",
    ReferencedEntity: SYSTEMUSER,
    ReferencedAttribute: "systemuserid",
    ReferencingEntity: AAD_APPLICATION,
    ReferencingAttribute: "mshr_userid",
    ReferencedEntityNavigationPropertyName: "mshr_aadapplication_userid",
    ReferencingEntityNavigationPropertyName: "mshr_userid",
  } as const,
];

/** Privileges granted to roles, with their depth (Dataverse's roleprivileges). */
export const ROLE_PRIVILEGE_TABLE: TableSpec = {
  name: "roleprivileges",
  columns: [
    { name: "roleprivilegeid", kind: "uuid", nullable: false, primary: true },
    { name: "roleid", kind: "uuid", nullable: false, indexed: true },
    { name: "privilegeid", kind: "uuid", nullable: false },
    { name: "depth", kind: "string", length: 10, nullable: false },
  ],
  uniques: [{ name: "role_privilege", columns: ["roleid", "privilegeid"] }],
};

/** Registered OAuth clients of the built-in token endpoint; secrets only as scrypt hashes. */
export const OAUTH_CLIENT_TABLE: TableSpec = {
  name: "vep_oauthclient",
  columns: [
    { name: "clientid", kind: "string", length: 100, nullable: false, primary: true },
    { name: "name", kind: "string", length: 200, nullable: true },
    { name: "secrethash", kind: "string", length: 300, nullable: false },
    { name: "createdon", kind: "datetime", nullable: false },
  ],
};

/** The service's own token signing key (HS256), created once per store. */
export const SIGNING_KEY_TABLE: TableSpec = {
  name: "vep_signingkey",
  columns: [
    { name: "keyid", kind: "string", length: 64, nullable: false, primary: true },
    { name: "secret", kind: "string", length: 200, nullable: false },
    { name: "createdon", kind: "datetime", nullable: false },
  ],
};

export type Depth = "Basic" | "Local" | "Deep" | "Global";
export const DEPTHS: readonly Depth[] = ["Basic", "Local", "Deep", "Global"];
