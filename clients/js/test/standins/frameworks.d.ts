// The few React and Vue types react.d.ts and vue.d.ts name, so that tsc checks the wrappers'
// declarations without either framework installed.
declare module "react" {
  export interface ReactElement {
    type: unknown;
    props: unknown;
    key: string | null;
  }
  export type ReactNode = ReactElement | string | number | boolean | null | undefined | readonly ReactNode[];
  export namespace JSX {
    interface IntrinsicElements {}
  }
}

declare module "vue" {
  export type DefineComponent<Props> = new () => { $props: Props };
}
