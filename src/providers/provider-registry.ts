import type { EntityModel } from "../metadata/model.js";
import { notImplemented } from "../odata/errors.js";
import type { DataProvider } from "./data-provider.js";

/** Data providers by id; an entity names its provider with DataProviderId (the SQL store when absent). */
export class ProviderRegistry {
  private readonly providers = new Map<string, DataProvider>();
  constructor(readonly defaultProvider: DataProvider) {
    this.register(defaultProvider);
  }
  register(provider: DataProvider): void {
    this.providers.set(provider.id.toLowerCase(), provider);
  }
  has(id: string): boolean {
    return this.providers.has(id.toLowerCase());
  }
  list(): DataProvider[] {
    return [...this.providers.values()];
  }
  for(entity: EntityModel): DataProvider {
    const id = entity.def.DataProviderId;
    if (!id) return this.defaultProvider;
    const p = this.providers.get(id.toLowerCase());
    if (!p) throw notImplemented(`The data provider ${id} of ${entity.logicalName} is not registered in this service`);
    return p;
  }
}
