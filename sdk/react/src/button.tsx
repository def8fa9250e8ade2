import type { ButtonHTMLAttributes, MouseEvent, ReactNode } from "react";
import { type SignInParams, useAuthAgent } from "./provider.js";

export interface SignInWithAuthAgentProps extends Omit<ButtonHTMLAttributes<HTMLButtonElement>, "type" | "children"> {
  /** The button's content and accessible name (default "Sign in with Auth Agent"); give `aria-label` too when it is only an icon. */
  label?: ReactNode;
  /** Scopes, resources or extra parameters for this button's sign-in, over the provider's. */
  signInParams?: SignInParams;
}

/**
 * A plain `<button>` that starts "Sign in with Auth Agent". It takes any
 * button attribute (`className`, `style`, `aria-*`, …) and is disabled, with
 * `aria-busy`, while a sign-in is under way, so a double click starts one.
 * An `onClick` that calls `preventDefault()` stops the sign-in.
 */
export function SignInWithAuthAgent(props: SignInWithAuthAgentProps): ReactNode {
  const { label = "Sign in with Auth Agent", signInParams, onClick, disabled, ...rest } = props;
  const { signIn, isLoading } = useAuthAgent();
  const click = (event: MouseEvent<HTMLButtonElement>) => {
    onClick?.(event);
    if (!event.isDefaultPrevented()) {
      void signIn(signInParams);
    }
  };
  return (
    <button {...rest} type="button" onClick={click} disabled={disabled === true || isLoading} aria-busy={isLoading}>
      {label}
    </button>
  );
}
